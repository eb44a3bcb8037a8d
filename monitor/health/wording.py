"""Every sentence the health engine writes for people: reasons, incident summaries, details.

One module so that the wording can be reviewed without touching the logic that decides states
and incidents. Each sentence is a `Text` from the catalogue (monitor/i18n.py): it reads as
English, and the pages and alerts render it in French or English.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence

from vigie.core.rules import Rule, text_values
from vigie.monitor.health.snapshot import ImpactedApp
from vigie.monitor.health.states import State
from vigie.monitor.i18n import Moment, Text, lines

FLAPPING = Text("reason.flapping")
MAINTENANCE = Text("incident.maintenance")
APPS_NAMED = 5
"""A component incident's summary names this many applications, then `...`."""
EXHAUSTED_SECONDS = 60.0
"""Less runtime than this left is no runtime: the UPS are down or about to be."""
_SEEN_VALUE = re.compile(r"\(([^()]*)\)")


def no_result(check_id: str) -> Text:
    """A check with no result, or none for too long."""
    return Text("reason.no_result", check=check_id)


def _seen_value(seen: str) -> float | None:
    """The value in what a condition saw (`metric (112.7) > 3`), None when absent."""
    match = _SEEN_VALUE.search(seen)
    if match is None:
        return None
    try:
        return float(match.group(1))
    except ValueError:
        return None


def rule_active(check_id: str, rule: Rule | str, seen: str) -> Text:
    """A rule holding on a check: its own plain text when it has one, else what was seen."""
    if isinstance(rule, Rule) and rule.text:
        value = _seen_value(seen)
        if value is not None:
            values = text_values(value, rule.condition.threshold)
            what = Text(f"rule.{rule.name}", dict(rule.text), **values)
            # the plain words first; what was seen stays for on-call, shown small on pages
            return Text("reason.rule_text", what=what, check=check_id, rule=rule.name, seen=seen)
    name = rule.name if isinstance(rule, Rule) else rule
    return Text("reason.rule", check=check_id, rule=name, seen=seen)


def impacted_by(roots: Iterable[str]) -> Text:
    """A component failing because of what it depends on."""
    return impacted_by_sorted(tuple(sorted(roots)))


@functools.lru_cache(maxsize=4096)
def impacted_by_sorted(roots: tuple[str, ...]) -> Text:
    """The same for roots already sorted; one Text per set of roots: a site's thousand
    impacted components share a few."""
    return Text("reason.impacted_by", roots=", ".join(roots))


def mains_lost(lost_at: float, runtime: float | None) -> Text:
    """A site whose every UPS runs on battery: since when, and the runtime left if any."""
    if runtime is None:
        return Text("site.mains_lost", at=Moment(lost_at))
    if runtime < EXHAUSTED_SECONDS:
        return Text("site.mains_lost_exhausted", at=Moment(lost_at))
    return Text("site.mains_lost_runtime", at=Moment(lost_at), n=round(runtime / 60))


def mass_failure(failing: int, members: int) -> Text:
    """Many components of a site failing at once."""
    return Text("site.mass_failure", n=failing, members=members)


def recovering(failing: int, members: int) -> Text:
    """A site incident that stays open while what failed during it recovers."""
    return Text("site.recovering", n=failing, members=members)


def site_summary(name: str, what: str, apps: int, at_risk: int | None = None) -> Text:
    """A site incident's one-line summary.

    at_risk counts every application on the site's battery, the impacted ones too: the summary
    says how many more are at risk, so none is counted twice.
    """
    impacted = Text("apps.impacted", n=apps)
    more = 0 if at_risk is None else at_risk - apps
    if more > 0:
        risk = Text("apps.more_at_risk", n=more)
        return Text("site.summary_risk", name=name, what=what, impacted=impacted, risk=risk)
    return Text("site.summary", name=name, what=what, impacted=impacted)


def replicas_lost(summary: Text, lost: Sequence[str]) -> Text:
    """A site incident's summary naming the Vigie replicas that fell with the site."""
    return Text(
        "site.replicas_lost",
        own={"en": "{summary}; {lost} lost", "fr": "{summary} ; {lost} perdue"},
        summary=summary,
        lost=" + ".join(lost),
    )


@functools.cache
def state_word(state: State) -> Text:
    """A state's name as the pages show it (DOWN, EN PANNE...); one Text per state."""
    return Text(f"state.{state.name}")


def component_summary(
    label: str, state: State, apps: Sequence[ImpactedApp], redundant_only: bool
) -> Text:
    """A root cause's one-line summary: its state and the applications it hits."""
    word = state_word(state)
    if redundant_only:
        return Text("component.summary_redundancy", label=label, state=word)
    if not apps:
        return Text("component.summary", label=label, state=word)
    names = ", ".join(a.name for a in apps[:APPS_NAMED]) + ("..." if len(apps) > APPS_NAMED else "")
    impacted = Text("apps.impacted", n=len(apps))
    return Text("component.summary_apps", label=label, state=word, impacted=impacted, names=names)


def warning_summary(label: str) -> Text:
    """A component in WARNING that nothing else explains."""
    return Text("warning.summary", label=label, state=state_word(State.WARNING))


@functools.lru_cache(maxsize=8192)
def application_line(app: ImpactedApp) -> Text:
    """One application in an incident's description, with what clinicians do meanwhile.

    One Text per application and state: a site incident lists hundreds, written again at
    each evaluation while it is open.
    """
    word = state_word(app.state)
    if app.degraded_mode:
        return Text(
            "app.line_degraded",
            tier=app.criticality,
            name=app.name,
            state=word,
            mode=app.degraded_mode,
        )
    return Text("app.line", tier=app.criticality, name=app.name, state=word)


def degraded_line(app: ImpactedApp) -> Text:
    """One application's degraded mode, as the alert's `degraded_mode` annotation lists them."""
    return Text("app.degraded", tier=app.criticality, name=app.name, mode=app.degraded_mode)


def description(items: Iterable[str]) -> Text:
    """An incident's description: reasons and application lines, one a line."""
    return lines(tuple(items))


def mains_lost_at(summary: str) -> float | None:
    """When the mains were lost, for a site incident whose summary says so; else None."""
    if not isinstance(summary, Text):
        return None
    what = summary.params.get("what")
    if isinstance(what, Text) and what.key.startswith("site.mains_lost"):
        at = what.params.get("at")
        return at.at if isinstance(at, Moment) else None
    return None
