"""How a failure is worded: each USM report named with the auth's details, never its secrets."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from vigie.probes.snmp.auth import SnmpAuth
from vigie.probes.snmp.failures import REPORT_REASONS, report_reason, stopped_mid_walk

AUTH = SnmpAuth(
    version=3,
    username="ops",
    auth_protocol="SHA256",
    auth_password=SecretStr("auth-secret-1"),
    priv_protocol="AES256",
    priv_password=SecretStr("priv-secret-2"),
)


@pytest.mark.parametrize("oid", sorted(REPORT_REASONS))
def test_every_report_has_a_kind_and_a_secret_free_reason(oid: str) -> None:
    """Each report OID gets its own kind; the reason names user and protocols, no password."""
    kind, reason = report_reason(oid, AUTH)
    assert kind == REPORT_REASONS[oid][0]
    assert "{" not in reason  # every placeholder filled
    assert "secret" not in reason


def test_reasons_name_what_to_check() -> None:
    """The wording points at the setting to fix: the user, the auth or the privacy protocol."""
    assert report_reason("1.3.6.1.6.3.15.1.1.3.0", AUTH)[1].endswith(
        "unknown user 'ops': the agent has no such user"
    )
    assert "(SHA256)" in report_reason("1.3.6.1.6.3.15.1.1.5.0", AUTH)[1]
    assert "(AES256)" in report_reason("1.3.6.1.6.3.15.1.1.6.0", AUTH)[1]


def test_an_unknown_report_is_an_authentication_failure_naming_it() -> None:
    """A report OID the table lacks still fails the poll, naming the OID."""
    assert report_reason("1.3.6.1.4.1.9.9.9.0", AUTH) == (
        "auth_failed",
        "SNMPv3 authentication failed (agent report 1.3.6.1.4.1.9.9.9.0)",
    )


def test_stopped_mid_walk_says_where_and_after_how_much() -> None:
    """A walk cut short names the subtree, what came, and the tries that got no answer."""
    failure = stopped_mid_walk("1.3.6.1.2.1.2.2.1.2", 150, 2, 0.5)
    assert failure.kind == "stopped_mid_walk"
    assert failure.reason == (
        "agent stopped answering mid-walk of 1.3.6.1.2.1.2.2.1.2 after 150 varbinds "
        "(2 tries of 0.5s)"
    )
