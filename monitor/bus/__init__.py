"""Probe workers on NATS: settings, the result codec, membership and shares, the consumer."""
