"""The simulated hospital: SNMP UPSes, PDUs and SAN arrays, servers with BMCs and applications."""

from lab.hospital import Lab
from lab.scenarios import SCENARIOS, ScenarioController, get_scenario, run_scenario

__all__ = ["SCENARIOS", "Lab", "ScenarioController", "get_scenario", "run_scenario"]
