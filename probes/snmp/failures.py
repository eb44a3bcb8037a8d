"""Why a poll failed: a kind (for logs) and a reason (ProbeResult.error), for both engines."""

from __future__ import annotations

from vigie.probes.snmp.auth import SnmpAuth

__all__ = ["REPORT_REASONS", "SnmpFailure", "report_reason", "stopped_mid_walk"]


class SnmpFailure(Exception):
    """A poll failed for a reason that fits in ProbeResult.error."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# usmStats / MPD / target counters an agent names in a Report PDU, and what they mean.
REPORT_REASONS: dict[str, tuple[str, str]] = {
    "1.3.6.1.6.3.15.1.1.1.0": (
        "unsupported_sec_level",
        "SNMPv3 unsupported security level: the agent does not accept user {user} at {level}",
    ),
    "1.3.6.1.6.3.15.1.1.2.0": (
        "not_in_time_window",
        "SNMPv3 not in time window: engine boots/time out of sync (agent restarted or its "
        "clock jumped); resynchronises on the next poll",
    ),
    "1.3.6.1.6.3.15.1.1.3.0": (
        "unknown_user",
        "SNMPv3 unknown user {user}: the agent has no such user",
    ),
    "1.3.6.1.6.3.15.1.1.4.0": ("unknown_engine_id", "SNMPv3 unknown engine ID"),
    "1.3.6.1.6.3.15.1.1.5.0": (
        "wrong_digest",
        "SNMPv3 wrong digest: auth password or auth protocol ({auth}) does not match the agent's",
    ),
    "1.3.6.1.6.3.15.1.1.6.0": (
        "decryption_error",
        "SNMPv3 decryption error: privacy password or protocol ({priv}) does not match the agent's",
    ),
    "1.3.6.1.6.3.11.2.1.1.0": ("unknown_security_model", "agent does not support SNMPv3 USM"),
    "1.3.6.1.6.3.11.2.1.2.0": ("invalid_message", "agent found the SNMPv3 message invalid"),
    "1.3.6.1.6.3.12.1.4.0": ("unavailable_context", "SNMPv3 context unavailable"),
    "1.3.6.1.6.3.12.1.5.0": ("unknown_context", "SNMPv3 unknown context"),
}


def report_reason(oid: str | None, auth: SnmpAuth) -> tuple[str, str]:
    """Return (kind, reason) for a report OID, with the auth's secret-free details."""
    kind, text = REPORT_REASONS.get(
        oid or "", ("auth_failed", f"SNMPv3 authentication failed (agent report {oid})")
    )
    return kind, text.format(
        user=repr(auth.username),
        level=auth.security_level,
        auth=auth.auth_protocol,
        priv=auth.priv_protocol,
    )


def stopped_mid_walk(
    subtree: str, received: int, tries: int, request_timeout: float
) -> SnmpFailure:
    """Return the failure of a walk the agent stopped answering after it had answered."""
    return SnmpFailure(
        "stopped_mid_walk",
        f"agent stopped answering mid-walk of {subtree} after {received} varbinds "
        f"({tries} tries of {request_timeout:.3g}s)",
    )
