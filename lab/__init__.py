"""The simulated hospital: SNMP UPSes, PDUs and SAN arrays, servers with BMCs and applications."""

from vigie.lab.hospital import Lab
from vigie.lab.scenarios import SCENARIOS, ScenarioController, get_scenario, run_scenario

__all__ = ["SCENARIOS", "Lab", "ScenarioController", "get_scenario", "run_scenario"]
