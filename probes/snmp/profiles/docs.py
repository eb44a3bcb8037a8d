"""The generated parts of the profile docs: docs/profiles.md's per-profile reference.

Also `vigie profile check FILE`'s summary: what a profile yields and what it polls.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from vigie.core.yamlpos import ConfigErrors
from vigie.probes.snmp.profiles.model import Profile, family_names, load_profile_file
from vigie.probes.snmp.profiles.plan import poll_plan

__all__ = ["check_profile_command", "profiles_markdown"]


def profiles_markdown(profiles: Mapping[str, Profile]) -> str:
    """Return the per-profile reference of docs/profiles.md: families, rules, traps."""
    parts: list[str] = []
    for name, profile in sorted(profiles.items()):
        parts.append(f"### `{name}`\n\n")
        if profile.description:
            parts.append(f"{profile.description.strip()}\n\n")
        parts.append(f"Source: {profile.source.strip()}\n\n")
        parts.append("| metric | type | unit | labels | help |\n|---|---|---|---|---|\n")
        labels = profile.family_labels()
        for m in profile.metrics:
            for fam, mtype, help_text, unit in m.families():
                parts.append(_row(fam, mtype, unit, labels[fam], help_text))
        for b in profile.booleans:
            parts.append(_row(b.name, "gauge (0/1)", None, labels[b.name], b.help))
        for r in profile.resets:
            parts.append(_row(r.name, "gauge (0/1)", None, labels[r.name], r.help))
        for d in profile.derive:
            parts.append(_row(d.name, f"gauge ({d.kind})", None, labels[d.name], d.help))
        required = [f"`{m.name}`" for m in profile.metrics if m.required]
        parts.append(
            f"\nRequired (the poll fails without them): {', '.join(required)}.\n"
            if required
            else "\nRequired: none (an absent object only leaves its metric absent).\n"
        )
        if profile.rules:
            parts.append("\nRules:\n\n| rule | expr | severity | for |\n|---|---|---|---|\n")
            for rule in profile.rules:
                for_ = f"{rule.for_:g}s" if rule.for_ is not None else ""
                expr = rule.expr.replace("|", "\\|")
                parts.append(f"| {rule.name} | `{expr}` | {rule.severity} | {for_} |\n")
        if profile.traps:
            parts.append("\nTraps:\n\n| trap | OID | sets |\n|---|---|---|\n")
            for trap in profile.traps:
                sets = ", ".join(f"{k}={v:g}" for k, v in trap.set.items()) or "(re-poll only)"
                parts.append(f"| {trap.name} | {trap.oid} | {sets} |\n")
        parts.append("\n")
    return "".join(parts)


def _row(name: str, mtype: str, unit: str | None, labels: list[str], help_text: str) -> str:
    label_text = ", ".join(labels) or "-"
    return f"| `{name}` | {mtype} | {unit or '-'} | {label_text} | {help_text.strip()} |\n"


def check_profile_command(path: Path) -> int:
    """`vigie profile check FILE`: validate one profile; print a summary or every error."""
    try:
        profile = load_profile_file(path)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} error(s) in {path}", file=sys.stderr)
        return 1
    plan = poll_plan([profile])
    print(
        f"{path}: OK, {len(family_names(profile))} metric families, {len(profile.rules)} rules, "
        f"{len(profile.traps)} traps; polls {len(plan.gets)} scalar OIDs and walks "
        f"{len(plan.walks)} columns; {len(plan.required)} required objects"
        + (f" ({', '.join(name for _, name in plan.required)})" if plan.required else "")
    )
    return 0
