"""Who is on call: the weekly rotation, an ICS calendar (recurrences, time zones, re-read)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from aiohttp import web

from vigie.monitor.alerting.ack import AckTokens, BadToken
from vigie.monitor.alerting.oncall import Calendar, OnCall, rotation_at
from vigie.monitor.alerting.settings import CalendarSettings, OncallSettings, RotationSettings

ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//CHU//Astreinte//FR
BEGIN:VTIMEZONE
TZID:Europe/Paris
BEGIN:STANDARD
DTSTART:19701025T030000
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU
TZOFFSETFROM:+0200
TZOFFSETTO:+0100
END:STANDARD
BEGIN:DAYLIGHT
DTSTART:19700329T020000
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU
TZOFFSETFROM:+0100
TZOFFSETTO:+0200
END:DAYLIGHT
END:VTIMEZONE
BEGIN:VEVENT
UID:astreinte-alice@chu
DTSTART;TZID=Europe/Paris:20260105T080000
DTEND;TZID=Europe/Paris:20260112T080000
RRULE:FREQ=WEEKLY;INTERVAL=2
EXDATE;TZID=Europe/Paris:20260202T080000
SUMMARY:Astreinte DSI: Alice
END:VEVENT
BEGIN:VEVENT
UID:astreinte-bob@chu
DTSTART;TZID=Europe/Paris:20260112T080000
DTEND;TZID=Europe/Paris:20260119T080000
RRULE:FREQ=WEEKLY;INTERVAL=2
SUMMARY:Astreinte DSI: Bob
END:VEVENT
BEGIN:VEVENT
UID:swap@chu
DTSTART;TZID=Europe/Paris:20260202T080000
DTEND;TZID=Europe/Paris:20260209T080000
SUMMARY:Astreinte DSI (échange): Carole
END:VEVENT
END:VCALENDAR
"""


def paris(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """A Paris wall-clock time as an aware datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("Europe/Paris"))


def test_weekly_rotation_hands_over_at_local_time_across_dst() -> None:
    """Handover each Monday 08:00 Paris time, summer time or not."""
    rot = RotationSettings.model_validate(
        {"start": "2026-03-16T08:00:00", "contacts": ["alice", "bob", "carole"]}
    )
    assert rotation_at(rot, paris(2026, 3, 16, 8, 0)) == ["alice", "bob", "carole"]
    assert rotation_at(rot, paris(2026, 3, 23, 7, 59))[0] == "alice"
    assert rotation_at(rot, paris(2026, 3, 30, 7, 59))[0] == "bob"  # summer time since the 29th
    assert rotation_at(rot, paris(2026, 3, 30, 8, 0)) == ["carole", "alice", "bob"]
    assert rotation_at(rot, paris(2026, 4, 6, 8, 0))[0] == "alice"


def calendar(path: Path) -> Calendar:
    """A calendar over a file, re-read at every look."""
    settings = CalendarSettings.model_validate({"file": str(path), "refresh": 0.001})
    return Calendar(settings, ["Alice", "Bob", "Carole"])


def test_ics_recurrences_exdate_and_time_zone(tmp_path: Path) -> None:
    """Alternate weeks from an RRULE, a cancelled week replaced by another event."""
    path = tmp_path / "astreinte.ics"
    path.write_text(ICS)
    cal = calendar(path)
    assert cal.load_file()
    assert cal.at(paris(2026, 1, 5, 8, 0)) == ["Alice"]
    assert cal.at(paris(2026, 1, 12, 7, 59)) == ["Alice"]
    assert cal.at(paris(2026, 1, 12, 8, 0)) == ["Bob"]
    assert cal.at(paris(2026, 1, 19, 9, 0)) == ["Alice"]
    assert cal.at(paris(2026, 2, 3, 12, 0)) == ["Carole"]  # Alice's week excluded (EXDATE)
    # 07:30 UTC on a winter Monday is 08:30 in Paris: Bob's week has begun.
    assert cal.at(datetime(2026, 1, 12, 7, 30, tzinfo=UTC)) == ["Bob"]
    assert cal.at(datetime(2026, 1, 12, 6, 30, tzinfo=UTC)) == ["Alice"]


def test_ics_reread_on_change_and_last_good_kept(tmp_path: Path) -> None:
    """A changed file is re-read; an unreadable one leaves the last good calendar in use."""
    path = tmp_path / "astreinte.ics"
    path.write_text(ICS)
    cal = calendar(path)
    assert cal.load_file()
    assert not cal.load_file()  # unchanged
    path.write_text(ICS.replace("SUMMARY:Astreinte DSI: Bob", "SUMMARY:Astreinte DSI: Carole"))
    os.utime(path, ns=(1, 2))
    assert cal.load_file()
    assert cal.at(paris(2026, 1, 13, 12, 0)) == ["Carole"]
    path.write_text("BEGIN:VCALENDAR\nthis is not")
    assert not cal.load_file()
    assert cal.error is not None
    assert cal.at(paris(2026, 1, 13, 12, 0)) == ["Carole"]


@pytest.fixture
async def ics_server() -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTP server serving ICS with an ETag; yields its URL and the If-None-Match seen."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("If-None-Match", ""))
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304)
        return web.Response(text=ICS, content_type="text/calendar", headers={"ETag": '"v1"'})

    app = web.Application()
    app.router.add_get("/astreinte.ics", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/astreinte.ics", seen
    await runner.cleanup()


async def test_ics_from_url_conditional_get(
    ics_server: tuple[str, list[str]], session: aiohttp.ClientSession
) -> None:
    """A calendar URL is fetched, then asked again with its ETag (304: kept)."""
    url, seen = ics_server
    settings = CalendarSettings.model_validate({"url": url})
    cal = Calendar(settings, ["Alice", "Bob"])
    assert await cal.load_url(session)
    assert not await cal.load_url(session)
    assert seen == ["", '"v1"']
    oncall = OnCall(None, cal)
    assert oncall.resolve("on-call", paris(2026, 1, 13, 12, 0)) == "Bob"
    assert oncall.resolve("on-call+1", paris(2026, 1, 13, 12, 0)) is None


def test_calendar_falls_back_to_rotation(tmp_path: Path) -> None:
    """No event now (or no calendar yet): the weekly rotation answers."""
    rot = RotationSettings.model_validate({"start": "2026-01-05T08:00:00", "contacts": ["Bob"]})
    oncall = OnCall(rot, calendar(tmp_path / "missing.ics"))
    assert oncall.resolve("on-call", paris(2026, 1, 6, 12, 0)) == "Bob"
    assert oncall.resolve("Alice", paris(2026, 1, 6, 12, 0)) == "Alice"


def test_policy_names_must_be_contacts() -> None:
    """A level addressing someone not in contacts is a config error."""
    with pytest.raises(ValueError, match="unknown contact 'zoe'"):
        OncallSettings.model_validate(
            {
                "contacts": [{"name": "alice"}],
                "policies": [
                    {"team": "dsi", "levels": [{"notify": [{"sink": "http:x", "to": "zoe"}]}]}
                ],
            }
        )


def test_tokens_round_trip_forgery_and_expiry() -> None:
    """A token carries its escalation and receiver; altered or expired ones are refused."""
    now = [1000.0]
    tokens = AckTokens(b"k" * 32, ttl=600, clock=lambda: now[0])
    token = tokens.make(42, "alice")
    claim = tokens.check(token)
    assert (claim.escalation, claim.receiver) == (42, "alice")
    assert len(token) < 60  # it travels in an SMS
    payload, _, sig = token.partition(".")
    forged = AckTokens(b"x" * 32, ttl=600, clock=lambda: now[0]).make(42, "alice")
    for bad in (
        f"{payload}.{sig[:-1]}A" if sig[-1] != "A" else f"{payload}.{sig[:-1]}B",
        forged,
        "garbage",
        f"{payload}.",
    ):
        with pytest.raises(BadToken):
            tokens.check(bad)
    now[0] += 601
    with pytest.raises(BadToken, match="expired"):
        tokens.check(token)


def test_check_warns_when_a_level_depends_on_one_site(tmp_path: Path) -> None:
    """`vigie check` warns when every sink of an escalation level depends on one site."""
    from vigie.monitor.config import load_config
    from vigie.probes import default_registry

    key = tmp_path / "ack.key"
    key.write_text("k" * 40)
    key.chmod(0o600)
    config = tmp_path / "vigie.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "alerting:\n"
        "  external_url: http://vigie.example.org\n"
        "  smtp: {host: relay.nord, port: 25, starttls: false, from: v@h.fr, to: [d@h.fr],"
        " site: nord}\n"
        "  http_sinks:\n"
        "    - {name: sms, url: 'http://gw.nord/send', body: '{{ message }}', site: nord}\n"
        "    - {name: modem, url: 'http://modem/send', body: '{{ message }}', site: 4g}\n"
        "  oncall:\n"
        f"    ack: {{secret_file: {key}}}\n"
        "    contacts: [{name: alice, phone: '+33600000001'}]\n"
        "    policies:\n"
        "      - team: dsi\n"
        "        levels:\n"
        "          - notify:\n"
        "              - {sink: 'http:sms', to: alice}\n"
        "              - {sink: 'smtp:relay.nord:25', to: alice}\n"
        "          - after: 10m\n"
        "            notify: [{sink: 'http:sms', to: alice}, {sink: 'http:modem', to: alice}]\n"
        "checks:\n  - {id: a, kind: tcp, target: '127.0.0.1:1'}\n"
    )
    loaded = load_config(config, default_registry(), env={})
    found = [str(w) for w in loaded.warnings if "depends on site" in str(w)]
    assert len(found) == 1
    assert "policy 'dsi' level 1: every sink depends on site 'nord'" in found[0]
    assert "alerting.oncall.policies[0].levels[0]" in found[0]


def test_the_documented_hospital_example_is_valid(tmp_path: Path) -> None:
    """docs/oncall.md's complete example loads (with its secret files present)."""
    import re as regex

    import yaml

    text = (Path(__file__).parents[2] / "docs" / "oncall.md").read_text()
    block = regex.search(r"```yaml\n(state_dir:.*?)```", text, regex.DOTALL)
    assert block is not None
    raw = yaml.safe_load(block.group(1))
    for name in ("smtp", "standard", "sms-api", "modem-basic"):
        (tmp_path / "secrets").mkdir(exist_ok=True)
        (tmp_path / "secrets" / name).write_text("x\n")
    (tmp_path / "secrets" / "ack.key").write_text("k" * 64)
    from vigie.monitor.alerting.settings import AlertingSettings

    settings = AlertingSettings.model_validate(raw["alerting"], context={"config_dir": tmp_path})
    assert settings.oncall is not None
    assert [p.team for p in settings.oncall.policies] == ["dsi", "*"]
    assert settings.oncall.policies[0].delays(1) == [0.0, 300.0, 600.0]


def test_ack_links_need_external_url(tmp_path: Path) -> None:
    """Acknowledgement links without external_url would point nowhere: a config error."""
    from vigie.monitor.alerting.settings import AlertingSettings

    key = tmp_path / "ack.key"
    key.write_text("k" * 40)
    with pytest.raises(ValueError, match=r"oncall\.ack needs external_url"):
        AlertingSettings.model_validate({"oncall": {"ack": {"secret_file": str(key)}}})


def test_readable_ack_key_and_sms_secret_are_warned(tmp_path: Path) -> None:
    """The ack key and an HTTP sink's secret files get the readable-by-others warning."""
    from vigie.monitor.config import load_config
    from vigie.probes import default_registry

    key, api = tmp_path / "ack.key", tmp_path / "sms.key"
    key.write_text("k" * 40)
    api.write_text("api-secret")
    key.chmod(0o644)
    api.chmod(0o604)
    config = tmp_path / "vigie.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "alerting:\n"
        "  external_url: http://vigie.example.org\n"
        "  http_sinks:\n"
        "    - {name: sms, url: 'http://gw/send', body: '{{ message }}',"
        f" secret_files: {{key: {api}}}}}\n"
        "  oncall:\n"
        f"    ack: {{secret_file: {key}}}\n"
        "checks:\n  - {id: a, kind: tcp, target: '127.0.0.1:1'}\n"
    )
    loaded = load_config(config, default_registry(), env={})
    found = sorted(str(w) for w in loaded.warnings if "can be read by other users" in str(w))
    assert len(found) == 2
    assert "alerting.oncall.ack.secret_file" in found[1]
    assert "alerting.http_sinks[0].secret_files.key" in found[0]
    assert "api-secret" not in str(loaded.warnings)
