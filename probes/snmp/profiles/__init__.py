"""SNMP device profiles: the model and its loading, the poll plan, evaluation, the docs."""

from vigie.probes.snmp.profiles.evaluate import evaluate
from vigie.probes.snmp.profiles.model import (
    SHIPPED_PROFILE_DIR,
    Profile,
    TrapDef,
    family_names,
    load_profile_dirs,
    load_profile_file,
)
from vigie.probes.snmp.profiles.plan import Collected, PollPlan, Value, poll_plan

__all__ = [
    "SHIPPED_PROFILE_DIR",
    "Collected",
    "PollPlan",
    "Profile",
    "TrapDef",
    "Value",
    "evaluate",
    "family_names",
    "load_profile_dirs",
    "load_profile_file",
    "poll_plan",
]
