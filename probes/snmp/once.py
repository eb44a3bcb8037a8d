"""One poll from the command line: the check `vigie probe snmp` and `vigie profile probe` run.

The CLI (and the tests and benchmarks, through it) builds its check here, with the same
`bind` the daemon's plan uses, then runs it through the scheduler as the daemon would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from vigie.probes.base import Check
from vigie.probes.snmp.probe import SnmpProbe
from vigie.probes.snmp.settings import SnmpCheckSettings, SnmpSection, SnmpSettings

__all__ = ["COMMAND_LINE_AUTH", "command_line_check"]

COMMAND_LINE_AUTH = "command-line"
"""The name the credentials given as options take beside the config's auths."""


def command_line_check(
    target: str,
    profiles: Sequence[str],
    *,
    section: SnmpSection | None = None,
    auth: str | None = None,
    auth_entry: Mapping[str, object] | None = None,
    timeout: float = 10.0,
    check_id: str = "probe",
) -> Check[SnmpCheckSettings]:
    """Return a bound check that polls target once with profiles (default: `system`).

    Credentials are the auth named `auth` of section (the config's `snmp:` block; default
    public_v2) or, when auth_entry is given, that `snmp.auths` entry itself. Raise ValueError
    (pydantic's ValidationError is one) saying what is wrong.
    """
    probe = SnmpProbe()
    section = section if section is not None else SnmpSection()
    auth_name = auth or "public_v2"
    if auth_entry is not None:
        auth_name = COMMAND_LINE_AUTH
        auths = {**section.model_dump()["auths"], auth_name: dict(auth_entry)}
        section = SnmpSection.model_validate(
            {"auths": auths, "profile_dirs": [str(d) for d in section.profile_dirs]}
        )
    settings = probe.bind(
        SnmpSettings(auth=auth_name, profiles=list(profiles or ["system"])), section, Path(".")
    )
    assert isinstance(settings, SnmpCheckSettings)
    parsed = probe.parse_target(target)
    return Check(
        id=check_id,
        kind=probe.kind,
        target=parsed,
        interval=timeout,
        timeout=timeout,
        settings=settings,
        host=probe.host_of(parsed),
    )
