# ruff: noqa: RUF001 (the multiplication sign is what the crisis cell reads)
"""The engine's sentences for people, in one place (to be translated): what each one says."""

from __future__ import annotations

import time

import pytest

from vigie.core.rules import Rule
from vigie.monitor.health import wording
from vigie.monitor.health.snapshot import ComponentStatus, ImpactedApp, Later
from vigie.monitor.health.states import State
from vigie.monitor.i18n import Speech, zone_of

FR = Speech("fr", zone_of("Europe/Paris"))


def app(i: int, degraded: str = "") -> ImpactedApp:
    """An application of tier 1."""
    return ImpactedApp(f"app-{i}", f"App {i}", 1, State.IMPACTED, degraded, "", "")


def test_reasons() -> None:
    """Reasons name the check, the rule and what was seen; impacted roots are sorted."""
    assert wording.no_result("chk-a") == "no result from check chk-a"
    assert wording.rule_active("chk-a", "probe_failed", "probe_success (0) == 0") == (
        "chk-a: probe_failed: probe_success (0) == 0"
    )
    assert wording.impacted_by(["ups-b", "san"]) == "impacted by san, ups-b"
    assert FR.say(wording.no_result("chk-a")) == "aucun résultat du contrôle chk-a"


def test_a_reason_kept_as_facts_is_written_once_when_read() -> None:
    """The engine keeps reasons as facts (Later): the sentence is made on the first read only,
    is the same sentence as written at once, and compares by facts (or as a sentence)."""
    made: list[str] = []

    def counted(check: str) -> str:
        made.append(check)
        return wording.no_result(check)

    later = Later(counted, "chk-a")
    status = ComponentStatus("srv", "server", "nord", State.UNKNOWN, State.UNKNOWN, 1.0,
                             (later,), ())  # fmt: skip
    assert made == []  # kept: nothing written yet
    assert status.reasons == ("no result from check chk-a",)
    assert status.reasons == ("no result from check chk-a",)
    assert made == ["chk-a"]  # written once, at the first read
    assert FR.say(status.reasons[0]) == "aucun résultat du contrôle chk-a"  # still a Text
    assert later == Later(counted, "chk-a") and later != Later(counted, "chk-b")
    assert later == "no result from check chk-a" and later != "no result from check chk-b"
    assert status == ComponentStatus("srv", "server", "nord", State.UNKNOWN, State.UNKNOWN,
                                     1.0, (Later(counted, "chk-a"),), ())  # fmt: skip


def test_a_rule_with_text_says_it_in_plain_words_with_rounded_numbers() -> None:
    """A rule's own text comes first, value rounded, in the reader's language; the raw stays."""
    rule = Rule.parse(
        "latency",
        "storage_latency_baseline_ratio > 3",
        text=(
            ("en", "latency {value:.0f} × its usual level (alert above {threshold:g} ×)"),
            ("fr", "latence {value:.0f} × son niveau habituel (alerte au-delà de {threshold:g} ×)"),
        ),
    )
    seen = "storage_latency_baseline_ratio (112.70466414969448) > 3"
    reason = wording.rule_active("san-snmp", rule, seen)
    assert reason.startswith("latency 113 × its usual level (alert above 3 ×) (san-snmp: latency:")
    assert FR.say(reason).startswith("latence 113 × son niveau habituel (alerte au-delà de 3 ×)")
    # an absent metric has no value to put in words: the raw reason stays
    assert wording.rule_active("san-snmp", rule, "storage_latency_baseline_ratio absent") == (
        "san-snmp: latency: storage_latency_baseline_ratio absent"
    )


def test_server_powered_off_is_said_so() -> None:
    """The shipped redfish rule on server_power_state says the server is off, in both languages."""
    from vigie.probes.redfish import RedfishSettings

    rules = {r.name: r for r in RedfishSettings(auth="none", default_rules=True).health_rules()}
    off = rules["server_powered_off"]
    reason = wording.rule_active("bmc", off, "server_power_state (1) == 1")
    assert reason.startswith("server powered off (bmc:")
    assert FR.say(reason).startswith("serveur éteint (bmc")
    assert all(dict(r.text).keys() == {"en", "fr"} for r in rules.values()), "a rule lacks a text"


@pytest.mark.parametrize(
    ("runtime", "tail"),
    [
        (None, ", on battery"),
        (60.0, ", on battery, about 1 minute of runtime left"),
        (900.0, ", on battery, about 15 minutes of runtime left"),
        (0.0, ", batteries exhausted"),
        (20.0, ", batteries exhausted"),
    ],
)
def test_mains_lost(runtime: float | None, tail: str) -> None:
    """Mains lost says the time with its zone and the runtime left; none left says exhausted."""
    lost = time.mktime((2026, 3, 1, 9, 5, 0, 0, 0, -1))
    zone = time.strftime("%Z", time.localtime(lost))
    assert wording.mains_lost(lost, runtime) == f"mains lost at 09:05 {zone}" + tail
    assert "0 minutes" not in wording.mains_lost(lost, runtime)


def test_mains_lost_in_french_in_the_config_zone() -> None:
    """The same sentence in French, its time in the configured zone with the zone's name."""
    lost = 1796176020.0  # 2026-12-02 01:47 UTC = 02:47 CET
    assert FR.say(wording.mains_lost(lost, 900.0)) == (
        "secteur perdu à 02:47 CET, sur batterie, environ 15 minutes d'autonomie restantes"
    )
    assert FR.say(wording.mains_lost(lost, 10.0)) == "secteur perdu à 02:47 CET, batteries épuisées"
    summary = wording.site_summary("Nord", wording.mains_lost(lost, 10.0), 4, 5)
    assert wording.mains_lost_at(summary) == lost
    assert wording.mains_lost_at("Nord: mass failure") is None


def test_site_summary_counts_apps_and_at_risk_only_when_more() -> None:
    """At risk counts those not yet hit (4 impacted of 5 on battery: 1 more), plurals agree."""
    assert wording.site_summary("Nord", "x", 2) == "Nord: x; 2 applications impacted"
    assert wording.site_summary("Nord", "x", 2, 2) == "Nord: x; 2 applications impacted"
    assert wording.site_summary("Nord", "x", 4, 5) == (
        "Nord: x; 4 applications impacted, 1 more at risk"
    )
    assert wording.site_summary("Nord", "x", 1) == "Nord: x; 1 application impacted"
    assert FR.say(wording.site_summary("Nord", "x", 1, 3)) == (
        "Nord : x ; 1 application touchée, 2 autres menacées"
    )
    assert wording.mass_failure(3, 4) == "3 of 4 components failing"
    assert wording.recovering(1, 4) == "recovering, 1 of 4 components still failing"


def test_component_summary_names_five_apps_then_dots() -> None:
    """A root cause's summary names its first five applications; redundancy lost says so."""
    apps = [app(i) for i in range(7)]
    assert wording.component_summary("SAN", State.DOWN, apps[:2], False) == (
        "SAN is DOWN; 2 applications impacted: App 0, App 1"
    )
    assert wording.component_summary("SAN", State.DOWN, apps[:1], False) == (
        "SAN is DOWN; 1 application impacted: App 0"
    )
    assert FR.say(wording.component_summary("SAN", State.DOWN, apps[:1], False)) == (
        "SAN : EN PANNE ; 1 application touchée : App 0"
    )
    assert wording.component_summary("SAN", State.DOWN, apps, False) == (
        "SAN is DOWN; 7 applications impacted: App 0, App 1, App 2, App 3, App 4..."
    )
    assert wording.component_summary("SAN", State.DOWN, [], False) == "SAN is DOWN"
    assert wording.component_summary("UPS A", State.DOWN, apps, True) == (
        "UPS A is DOWN: running without redundancy"
    )


def test_application_line_gives_the_degraded_mode() -> None:
    """An application's line gives its tier, state and, when set, its degraded mode."""
    assert wording.application_line(app(1)) == "[tier 1] App 1: IMPACTED"
    assert wording.application_line(app(1, "paper")) == (
        "[tier 1] App 1: IMPACTED - degraded mode: paper"
    )


def test_every_shipped_profile_rule_says_itself_in_plain_words() -> None:
    """Each rule of config/profiles carries an en and an fr text that renders with units."""
    from pathlib import Path

    from vigie.core.rules import text_values
    from vigie.probes.snmp.profiles.model import load_profile_file

    profiles = sorted((Path(__file__).resolve().parents[2] / "config" / "profiles").glob("*.yaml"))
    rules = [(p.name, r) for p in profiles for r in load_profile_file(p).rules]
    assert len(rules) > 40
    for name, rule in rules:
        assert set(rule.text) == {"en", "fr"}, (name, rule.name)
        for template in rule.text.values():
            said = template.format(**text_values(112.70466414969448, 3.0))
            assert "112.70" not in said, (name, rule.name, said)  # rounded, when it is said
