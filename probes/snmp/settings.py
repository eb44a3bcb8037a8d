"""An snmp check's settings, the top-level `snmp:` block, and the settings `bind` resolves.

A check names one auth and a list of profiles (`SnmpSettings`); the `snmp:` block holds the
auths and extra profile directories (`SnmpSection`); `SnmpProbe.bind` turns the names into
`SnmpCheckSettings` with the auth, the profiles and their poll plan when the plan is built.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from vigie.core.durations import Duration
from vigie.core.expr import parse_condition
from vigie.core.rules import Rule, Severity, rule_text
from vigie.core.secrets import ConfigPath
from vigie.core.yamlpos import ConfigErrors
from vigie.probes.snmp.auth import BUILTIN_AUTHS, SnmpAuth
from vigie.probes.snmp.profiles.model import (
    SHIPPED_PROFILE_DIR,
    Profile,
    TrapDef,
    load_profile_dirs,
)
from vigie.probes.snmp.profiles.plan import PollPlan

__all__ = [
    "PROFILE_SEVERITIES",
    "SnmpCheckSettings",
    "SnmpSection",
    "SnmpSettings",
]


class SnmpSection(BaseModel):
    """The top-level `snmp:` block: named credentials and extra profile directories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auths: dict[str, SnmpAuth] = Field(
        default_factory=dict, description="Credentials by name; checks refer to them by `auth`."
    )
    profile_dirs: list[ConfigPath] = Field(
        default_factory=list,
        description="Extra directories of profile YAML files (the shipped ones always load).",
    )
    _profiles: dict[str, Profile] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _load_profiles(self) -> Self:
        """Load the shipped profiles and those of profile_dirs; report every error."""
        try:
            self._profiles = load_profile_dirs([SHIPPED_PROFILE_DIR, *self.profile_dirs])
        except ConfigErrors as exc:
            raise ValueError("invalid profiles:\n" + str(exc)) from None
        return self

    def profiles(self) -> dict[str, Profile]:
        """Return every loaded profile by name."""
        return self._profiles

    def all_auths(self) -> dict[str, SnmpAuth]:
        """Return the built-in auths overridden by the config's own."""
        return {**BUILTIN_AUTHS, **self.auths}


class SnmpSettings(BaseModel):
    """Settings of an snmp check: which credentials, which profiles, and polling limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auth: str = Field("public_v2", description="Name of an entry of snmp.auths.")
    profiles: list[str] = Field(
        default_factory=lambda: ["system"], min_length=1, description="Profiles to collect."
    )
    max_varbinds: int = Field(32, ge=1, le=256, description="Varbinds per GET PDU.")
    max_repetitions: int = Field(25, ge=1, le=1000, description="GETBULK max-repetitions.")
    walk_cap: int = Field(
        10000, ge=1, le=1_000_000, description="Most varbinds one walk may return."
    )
    retries: int = Field(1, ge=0, le=10, description="Resends of a request that gets no answer.")
    request_timeout: Duration | None = Field(
        None,
        description="Wait for one answer; default: the check's timeout / (retries + 2), "
        "leaving time to diagnose a failure.",
    )


class SnmpCheckSettings(SnmpSettings):
    """An snmp check's settings with its auth and profiles resolved (built by `bind`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    resolved_auth: SnmpAuth
    resolved_profiles: tuple[Profile, ...]
    plan: PollPlan

    def health_rules(self) -> list[Rule]:
        """Return the rules the check's profiles carry, for the health engine (first name wins).

        Profile severities map to component states: info is shown nowhere, warning stays
        warning, degraded is degraded, critical puts the device DOWN.
        """
        rules: dict[str, Rule] = {}
        for profile in self.resolved_profiles:
            for spec in profile.rules:
                severity = PROFILE_SEVERITIES[spec.severity]
                if severity is None or spec.name in rules:
                    continue
                rules[spec.name] = Rule(
                    name=spec.name,
                    condition=parse_condition(spec.expr),
                    clear=None,
                    severity=severity,
                    for_=spec.for_ or 0.0,
                    clear_for=0.0,
                    text=rule_text(spec.text),
                )
        return list(rules.values())

    def trap_meanings(self) -> dict[str, TrapDef]:
        """Return what the profiles' traps mean, by trap OID (a later profile's wins)."""
        return {trap.oid: trap for profile in self.resolved_profiles for trap in profile.traps}

    def family_helps(self) -> dict[str, str]:
        """Return the HELP text of every family of the profiles (for samples a trap adds)."""
        helps: dict[str, str] = {}
        for profile in self.resolved_profiles:
            helps.update({f[0]: f[2] for m in profile.metrics for f in m.families()})
            helps.update({b.name: b.help for b in profile.booleans})
            helps.update({r.name: r.help for r in profile.resets})
        return helps


PROFILE_SEVERITIES: dict[str, Severity | None] = {
    "info": None,
    "warning": "warning",
    "degraded": "degraded",
    "critical": "down",
}
"""Profile rule severity -> component state severity of the health engine."""
