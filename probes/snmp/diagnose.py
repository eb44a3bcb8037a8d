"""Say why a gufo-snmp poll failed: silence or an SNMPv3 report, asked again in plaintext."""

from __future__ import annotations

import time

from vigie.probes.snmp.auth import SnmpAuth
from vigie.probes.snmp.client import NoAnswer
from vigie.probes.snmp.failures import SnmpFailure, report_reason
from vigie.probes.snmp.usm import usm_check

__all__ = ["explain_auth", "explain_silence"]


async def explain_silence(
    exc: NoAnswer,
    *,
    target: str,
    host: str,
    port: int,
    auth: SnmpAuth,
    request_timeout: float,
    deadline: float,
) -> SnmpFailure:
    """Classify a poll that got no answer, asking the agent for v3 discovery if time allows."""
    if exc.refused:
        return SnmpFailure(
            "refused",
            f"agent down: {target} refused (ICMP port unreachable: nothing listens "
            "on that UDP port)",
        )
    tries = (
        f"after {exc.tries} tries of {request_timeout:.3g}s"
        if exc.tries
        else "within the check's timeout"
    )
    remaining = deadline - time.monotonic()
    probe_auth = auth if auth.version == 3 and auth.security_level == "authPriv" else None
    if remaining < 0.05 or (auth.version == 3 and probe_auth is None):
        usm = None
    else:
        usm = await usm_check(host, port, probe_auth, min(remaining, request_timeout))
    if auth.version != 3:
        if usm is not None and usm.discovered:
            return SnmpFailure(
                "wrong_community",
                f"timeout: no answer to community requests from {target} {tries}, but "
                "the agent answers SNMPv3 discovery: wrong community, or v1/v2c not allowed "
                "from this address (a wrong community looks like a timeout)",
            )
        return SnmpFailure(
            "timeout",
            f"timeout: no answer from {target} {tries} (agent down or unreachable; "
            "with SNMPv1/v2c a wrong community looks like a timeout too)",
        )
    if usm is not None and usm.report is not None:
        return SnmpFailure(*report_reason(usm.report, auth))
    if usm is not None and usm.accepted:
        return SnmpFailure(
            "decryption_error",
            "SNMPv3 decryption error: the user authenticates but encrypted requests get no "
            f"answer: privacy password or protocol ({auth.priv_protocol}) does not match",
        )
    return SnmpFailure("timeout", f"timeout: no answer from {target} {tries}")


async def explain_auth(host: str, port: int, auth: SnmpAuth, deadline: float) -> SnmpFailure:
    """Classify an SNMPv3 report by repeating the request in plaintext and reading the report."""
    remaining = deadline - time.monotonic()
    if remaining >= 0.05:
        usm = await usm_check(host, port, auth, min(remaining, 2.0))
        if usm.report is not None:
            return SnmpFailure(*report_reason(usm.report, auth))
        if usm.accepted and auth.security_level == "authPriv":
            return SnmpFailure(*report_reason("1.3.6.1.6.3.15.1.1.6.0", auth))
        if usm.accepted:
            return SnmpFailure(*report_reason("1.3.6.1.6.3.15.1.1.2.0", auth))
    return SnmpFailure("auth_failed", "SNMPv3 authentication failed (the agent sent a report)")
