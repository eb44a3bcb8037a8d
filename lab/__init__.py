"""The simulated hospital: SNMP UPSes, PDUs and SAN arrays, servers and applications on loopback."""

from lab.hospital import Lab
from lab.scenarios import SCENARIOS, ScenarioController, get_scenario, run_scenario

__all__ = ["SCENARIOS", "Lab", "ScenarioController", "get_scenario", "run_scenario"]
