"""The OpenAPI document describes every /api/v1 route, and real responses match its shapes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from tests.web.outage import fetch, power_cut, running_hospital
from vigie.monitor.web import build_app
from vigie.monitor.web.openapi import document
from vigie.monitor.web.readmodel import DaemonReadModel


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return resolve(doc, node)


TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def validate(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> None:
    """Check value against the subset of OpenAPI 3.0 schemas the document uses."""
    schema = resolve(doc, schema)
    if value is None:
        assert schema.get("nullable"), f"{where}: null but not nullable"
        return
    expected = TYPES[schema["type"]]
    ok = isinstance(value, expected) and not (
        schema["type"] in ("integer", "number") and isinstance(value, bool)
    )
    assert ok, f"{where}: {value!r} is not {schema['type']}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if schema["type"] == "object":
        for key in schema.get("required", ()):
            assert key in value, f"{where}: missing {key}"
        props = schema.get("properties", {})
        if props:
            extra = set(value) - set(props)
            assert not extra, f"{where}: undocumented keys {sorted(extra)}"
        for key, sub in props.items():
            if key in value:
                validate(doc, sub, value[key], f"{where}.{key}")
        extra_schema = schema.get("additionalProperties")
        if isinstance(extra_schema, dict):
            for key, item in value.items():
                validate(doc, extra_schema, item, f"{where}.{key}")
    if schema["type"] == "array":
        for i, item in enumerate(value):
            validate(doc, schema["items"], item, f"{where}[{i}]")


def response_schema(doc: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    """Return the documented JSON schema of one response."""
    content = doc["paths"][path][method]["responses"][status]["content"]
    schema: dict[str, Any] = content["application/json"]["schema"]
    return schema


async def test_every_api_route_is_documented_and_responses_match(tmp_path: Path) -> None:
    """Each /api/v1 route of the router is in the document, and live answers fit its schemas."""
    end = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    window = {"maintenance": [{"target": "srv-15", "end": end, "reason": "firmware"}]}
    async with running_hospital(tmp_path, extra=window) as (daemon, targets):
        await power_cut(daemon, targets)
        status, served = await fetch(daemon, "/api/v1/openapi.json")
        assert status == 200
        doc = json.loads(served)
        assert doc == document() and doc["openapi"].startswith("3.")
        # The routes of the application the daemon serves, built the way Daemon.start builds it.
        routes = {
            (route.resource.canonical, route.method.lower())
            for route in build_app(DaemonReadModel(daemon)).router.routes()
            if route.resource is not None
            and route.resource.canonical.startswith("/api/v1")
            and route.method != "HEAD"
        }
        documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
        assert routes == documented
        # an operator's update on the power cut: the audit log and the updates are not empty
        incident = quote(next(iter(daemon.health.engine.snapshot.incidents.values())).id, safe="")
        post = f"http://127.0.0.1:{daemon.listen_port}/api/v1/incidents/{incident}/updates"
        async with aiohttp.ClientSession() as s, s.post(post, json={"text": "on it"}) as r:
            assert r.status == 201
            posted = await r.json()
        validate(doc, response_schema(doc, "/api/v1/incidents/{id}/updates", "post", "201"), posted)
        checked = 0
        for path, method in sorted(routes):
            if method != "get" or path.endswith("openapi.json"):
                continue
            status, body = await fetch(daemon, path.replace("{id}", incident))
            assert status == 200, path
            value = json.loads(body)
            assert value, f"{path} is empty during the power cut: nothing validated"
            validate(doc, response_schema(doc, path, "get", "200"), value, path)
            checked += 1
        assert checked == 10
        url = f"http://127.0.0.1:{daemon.listen_port}/api/v1/maintenance"
        async with aiohttp.ClientSession() as s:
            async with s.post(url, json={"target": "srv-00", "end": end, "reason": "fw"}) as r:
                assert r.status == 201
                validate(
                    doc, response_schema(doc, "/api/v1/maintenance", "post", "201"), await r.json()
                )
            async with s.post(url, json={"target": "nope", "end": end}) as r:
                assert r.status == 404
                validate(
                    doc, response_schema(doc, "/api/v1/maintenance", "post", "404"), await r.json()
                )


def test_validator_rejects_a_wrong_shape() -> None:
    """The small validator fails on a missing key, a wrong type and an unknown state."""
    doc = document()
    site = {"$ref": "#/components/schemas/Site"}
    validate(doc, site, {"id": "nord", "name": "N", "parent": None, "state": "DOWN"})
    for bad in (
        {"id": "nord", "name": "N", "state": "DOWN"},
        {"id": 1, "name": "N", "parent": None, "state": "DOWN"},
        {"id": "nord", "name": "N", "parent": None, "state": "ON_FIRE"},
    ):
        try:
            validate(doc, site, bad)
        except AssertionError:
            continue
        raise AssertionError(f"accepted {bad}")
