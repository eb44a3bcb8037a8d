"""The snmp probe kind as a package; its modules, bottom to top, each importing only those below.

ber (a minimal BER codec) · auth (credentials and their keys) · failures (how a failure is
worded) · usm (the plaintext USM check) · profiles/ (model, plan, evaluate, docs) · settings
(a check's settings and the `snmp:` block) · client (one gufo-snmp conversation) · polling
(GET and walks) · diagnose (why a poll failed) · context (pysnmp polls in a named context) ·
traps (SNMP's side of the trap receiver) · probe (SnmpProbe) · once (one poll for the CLI).

pysnmp is imported by context and traps only, on first use: a daemon without context polls
or traps never loads it.
"""

from vigie.probes.snmp.auth import BUILTIN_AUTHS, SnmpAuth
from vigie.probes.snmp.client import parse_target
from vigie.probes.snmp.probe import SnmpProbe
from vigie.probes.snmp.settings import SnmpCheckSettings, SnmpSection, SnmpSettings

__all__ = [
    "BUILTIN_AUTHS",
    "SnmpAuth",
    "SnmpCheckSettings",
    "SnmpProbe",
    "SnmpSection",
    "SnmpSettings",
    "parse_target",
]
