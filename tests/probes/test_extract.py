"""The http probe's `extract:`: JSON and XML values into samples, bounded, and the shipped
Mirth Connect example against recorded answers of its REST API (tests/fixtures/mirth: the one
place a recording stands in for a server, Mirth, that cannot run here), served over loopback.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from pydantic import ValidationError

from tests.probes.conftest import make_check, sample, serve_http
from vigie.core.expr import parse_condition
from vigie.monitor.config import load_config
from vigie.probes import default_registry
from vigie.probes.base import ProbeContext
from vigie.probes.extract import MAX_VALUES, ExtractError, ExtractSpec, extract, json_path
from vigie.probes.http import HttpProbe

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "mirth"
EXAMPLE = ROOT / "config" / "examples" / "mirth.yaml"
LAB_ID = "8b1e7f52-3c4d-4a6b-9e21-5f0c7d3a1b64"
PASSWORD = "mirth-read-only"


@pytest.fixture
def probe() -> HttpProbe:
    """A fresh http probe."""
    return HttpProbe()


def spec(**fields: Any) -> ExtractSpec:
    """An extraction as the config gives it."""
    return ExtractSpec.model_validate(fields)


def test_json_path_subset() -> None:
    """Keys, quoted keys, indexes (negative too), every item and every member."""
    doc = {"list": [{"n": 1, "a b": 2}, {"n": 3}], "o": {"x": 1, "y": 2}}
    assert json_path(doc, "$.list[*].n") == [1, 3]
    assert json_path(doc, "$['list'][-1].n") == [3]
    assert json_path(doc, "$.list[0]['a b']") == [2]
    assert json_path(doc, "$.o.*") == [1, 2]
    assert json_path(doc, "$.o[*].x") == [1]  # an object where a list was: a list of one
    assert json_path(doc, "$.missing[*]") == []


@pytest.mark.parametrize("bad", ["list[0]", "$..n", "$.list[?(@.n)]", "$.list["])
def test_bad_json_paths_are_refused_at_load(bad: str) -> None:
    """A path outside the subset fails where it is written."""
    with pytest.raises(ValidationError, match="JSON path"):
        spec(name="m", json=bad)


def test_exactly_one_of_json_and_xml() -> None:
    """An extraction reads either JSON or XML."""
    with pytest.raises(ValidationError, match="exactly one"):
        spec(name="m")
    with pytest.raises(ValidationError, match="exactly one"):
        spec(name="m", json="$.a", xml="./a")


def test_values_labels_and_mapped_states() -> None:
    """Parallel label paths, one label for all, text mapped to numbers, numeric text."""
    body = json.dumps(
        {
            "site": "nord",
            "ch": [{"n": "LAB", "s": "STARTED", "q": "4"}, {"n": "ADT", "s": "PAUSED", "q": 0}],
        }
    ).encode()
    got = extract(
        [
            spec(
                name="up",
                json="$.ch[*].s",
                map={"STARTED": 1, "PAUSED": 0},
                labels={"channel": "$.ch[*].n", "site": "$.site"},
            ),
            spec(name="queued", json="$.ch[*].q", labels={"channel": "$.ch[*].n"}),
        ],
        body,
    )
    assert [(s.name, s.value, s.labels) for s in got] == [
        ("up", 1.0, (("channel", "LAB"), ("site", "nord"))),
        ("up", 0.0, (("channel", "ADT"), ("site", "nord"))),
        ("queued", 4.0, (("channel", "LAB"),)),
        ("queued", 0.0, (("channel", "ADT"),)),
    ]


@pytest.mark.parametrize(
    ("body", "specs", "reason"),
    [
        (b"<html>", [{"name": "m", "json": "$.a"}], "not JSON"),
        (b'{"a": 1}', [{"name": "m", "xml": "./a"}], "not XML"),
        (b'{"a": 1}', [{"name": "m", "json": "$.b"}], "matched nothing"),
        (b'{"a": "up"}', [{"name": "m", "json": "$.a"}], "not a number"),
        (
            b'{"a": [1, 2], "n": ["x", "y", "z"]}',
            [{"name": "m", "json": "$.a[*]", "labels": {"k": "$.n[*]"}}],
            "gave 3 values for 2",
        ),
        (
            b'{"a": [1, 2], "n": ["x", "x"]}',
            [{"name": "m", "json": "$.a[*]", "labels": {"k": "$.n[*]"}}],
            "two values",
        ),
        (
            json.dumps({"a": list(range(MAX_VALUES + 1))}).encode(),
            [{"name": "m", "json": "$.a[*]"}],
            f"over {MAX_VALUES}",
        ),
        (b"[" * 100000, [{"name": "m", "json": "$.a"}], "not JSON"),
    ],
)
def test_bad_answers_say_what_is_wrong(
    body: bytes, specs: list[dict[str, Any]], reason: str
) -> None:
    """Garbage, missing values, text, mismatched labels, too many values, deep nesting."""
    with pytest.raises(ExtractError, match=reason):
        extract([spec(**s) for s in specs], body)


def test_label_values_from_the_answer_are_bounded_and_sanitised() -> None:
    """A target cannot put control characters or a novel in a label."""
    body = json.dumps({"v": 1, "n": "evil\x1b[31m" + "x" * 1000}).encode()
    (got,) = extract([spec(name="m", json="$.v", labels={"k": "$.n"})], body)
    value = dict(got.labels)["k"]
    assert len(value) <= 128 and "\x1b" not in value


def test_xml_texts_and_attributes() -> None:
    """ElementTree paths, element texts and a final /@attribute."""
    body = (FIXTURES / "channels_statuses.xml").read_bytes()
    got = extract(
        [
            spec(
                name="queued",
                xml="./dashboardStatus/queued",
                labels={"channel": "./dashboardStatus/name"},
            )
        ],
        body,
    )
    assert [(s.value, s.labels) for s in got] == [
        (0.0, (("channel", "LAB-RESULTS-ORU"),)),
        (12.0, (("channel", "ADT-OUT-DPI"),)),
    ]
    (attr,) = extract([spec(name="v", xml="./item/@value")], b'<r><item value="7"/></r>')
    assert attr.value == 7.0


def test_xml_entity_bombs_are_refused() -> None:
    """An entity expansion attack is refused by expat, not expanded."""
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(
            f'<!ENTITY {c} "{("&" + p + ";") * 10}">'.encode()
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + b"]><l>&i;</l>"
    )
    with pytest.raises(ExtractError, match="not XML"):
        extract([spec(name="m", xml=".")], bomb)


# --- The shipped Mirth example against recorded answers ------------------------------------


def mirth_app(statuses: str) -> web.Application:
    """Mirth's API as recorded: basic auth and the CSRF header required, JSON answers."""
    want = "Basic " + base64.b64encode(f"vigie:{PASSWORD}".encode()).decode()

    def answer(name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != want:
                return web.Response(status=401)
            if request.headers.get("X-Requested-With") != "OpenAPI":
                return web.Response(status=400, text="missing X-Requested-With")
            return web.Response(
                body=(FIXTURES / name).read_bytes(), content_type="application/json"
            )

        return handler

    app = web.Application()
    app.router.add_get("/api/channels/statuses", answer(statuses))
    app.router.add_get(f"/api/channels/{LAB_ID}/statistics", answer("channel_statistics.json"))
    return app


@pytest.fixture
async def mirth(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The recorded Mirth on a free loopback port."""
    statuses = getattr(request, "param", "channels_statuses.json")
    async with serve_http(mirth_app(statuses)) as base:
        yield base


def example_check(
    tmp_path: Path, check_id: str, base: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the example's settings for a check (its module's merged in) and the example."""
    example = yaml.safe_load(EXAMPLE.read_text())
    check = next(c for c in example["checks"] if c["id"] == check_id)
    module = example["modules"][check["module"]]
    settings = {**module["http"], **check["http"]}
    (tmp_path / "mirth").write_text(PASSWORD)
    settings["basic_auth"] = {**settings["basic_auth"], "password_file": str(tmp_path / "mirth")}
    url = check["target"].replace("https://mirth.chu.local:8443", base)
    return {"url": url, "settings": settings}, example


def rule_holds(example: dict[str, Any], name: str, result: Any) -> bool | None:
    """Evaluate one of the example's plain rules on a result."""
    rule = next(r for r in example["rules"] if r["name"] == name)
    return parse_condition(rule["expr"]).evaluate(result.samples)[0]


async def test_mirth_channel_states_and_queues(
    probe: HttpProbe, ctx: ProbeContext, mirth: str, tmp_path: Path
) -> None:
    """Every channel's state and queue by name; the paused ADT channel makes the rule hold."""
    check, example = example_check(tmp_path, "mirth-channels", mirth)
    result = await probe(make_check(probe, check["url"], **check["settings"]), ctx)
    assert result.success, result.error
    assert sample(result, "mirth_channel_started", channel="LAB-RESULTS-ORU") == 1.0
    assert sample(result, "mirth_channel_started", channel="ADT-OUT-DPI") == 0.0
    assert sample(result, "mirth_channel_queued", channel="ADT-OUT-DPI") == 12.0
    assert rule_holds(example, "mirth_channel_stopped", result) is True


@pytest.mark.parametrize("mirth", ["channels_statuses_one.json"], indirect=True)
async def test_mirth_one_channel_is_a_bare_object(
    probe: HttpProbe, ctx: ProbeContext, mirth: str, tmp_path: Path
) -> None:
    """XStream gives a list of one as an object: `[*]` still reads it."""
    check, example = example_check(tmp_path, "mirth-channels", mirth)
    result = await probe(make_check(probe, check["url"], **check["settings"]), ctx)
    assert result.success, result.error
    assert sample(result, "mirth_channel_started", channel="LAB-RESULTS-ORU") == 1.0
    assert rule_holds(example, "mirth_channel_stopped", result) is False


async def test_mirth_lab_counters_feed_the_silence_rule(
    probe: HttpProbe, ctx: ProbeContext, mirth: str, tmp_path: Path
) -> None:
    """The lab channel's counters come out as counters; the example's freshness rule reads them."""
    check, example = example_check(tmp_path, "mirth-lab-results", mirth)
    result = await probe(make_check(probe, check["url"], **check["settings"]), ctx)
    assert result.success, result.error
    assert sample(result, "mirth_channel_received_total") == 48213.0
    assert sample(result, "mirth_channel_errored_total") == 3.0
    received = next(s for s in result.samples if s.name == "mirth_channel_received_total")
    assert received.type == "counter"
    rule = next(r for r in example["rules"] if r["name"] == "lab_feed_silent")
    cond = parse_condition(rule["expr"])
    memory = cond.memory()
    answers = [cond.evaluate(result.samples, t * 60.0, memory)[0] for t in range(31)]
    assert answers[-1] is True and answers[0] is None  # flat for 30 minutes: silent


async def test_mirth_wrong_password_and_garbage(
    probe: HttpProbe, ctx: ProbeContext, mirth: str, tmp_path: Path
) -> None:
    """A refused login says its status; an answer that is not Mirth's names the missing path."""
    check, _ = example_check(tmp_path, "mirth-lab-results", mirth)
    (tmp_path / "mirth").write_text("wrong")
    refused = await probe(make_check(probe, check["url"], **check["settings"]), ctx)
    assert not refused.success and "401" in (refused.error or "")
    (tmp_path / "mirth").write_text(PASSWORD)
    other = check["url"].replace(LAB_ID, "00000000-0000-0000-0000-000000000000")
    lost = await probe(make_check(probe, other, **check["settings"]), ctx)
    assert not lost.success and "404" in (lost.error or "")
    statuses = check["url"].replace(f"{LAB_ID}/statistics", "statuses")
    wrong = await probe(make_check(probe, statuses, **check["settings"]), ctx)
    assert not wrong.success
    assert (
        wrong.error
        == "extract mirth_channel_received_total: $.channelStatistics.received matched nothing"
    )


async def test_a_cut_answer_is_not_extracted(
    probe: HttpProbe, ctx: ProbeContext, mirth: str, tmp_path: Path
) -> None:
    """An answer over max_body_bytes fails rather than giving half the channels."""
    check, _ = example_check(tmp_path, "mirth-channels", mirth)
    settings = {**check["settings"], "max_body_bytes": 100}
    result = await probe(make_check(probe, check["url"], **settings), ctx)
    assert not result.success and "max_body_bytes" in (result.error or "")


def test_the_example_loads_as_a_config(tmp_path: Path) -> None:
    """config/examples/mirth.yaml is a valid config as shipped (its secret file beside it)."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "mirth").write_text(PASSWORD)
    (tmp_path / "secrets" / "mirth").chmod(0o600)
    (tmp_path / "vigie.yaml").write_text(EXAMPLE.read_text())
    loaded = load_config(tmp_path / "vigie.yaml", default_registry(), env={})
    assert not loaded.warnings, loaded.warnings
    assert {"mirth-channels", "mirth-lab-results"} <= set(loaded.plan)
