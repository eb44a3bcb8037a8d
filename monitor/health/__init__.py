"""Health model: rules, topology, component states, incidents."""
