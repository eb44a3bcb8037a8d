"""The `vigie` command line: check, schema, probe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from monitor.cli import main
from tests.conftest import free_port

ROOT = Path(__file__).parent.parent


def test_check_prints_summary(capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`vigie check` on a valid file prints checks by kind and by site and exits 0."""
    monkeypatch.setenv("VIGIE_RDV_PASSWORD", "not-printed-secret")
    monkeypatch.setenv("VIGIE_LABO_TOKEN", "not-printed-token")
    assert main(["check", str(ROOT / "config" / "vigie.example.yaml")]) == 0
    out = capsys.readouterr().out
    assert "OK, 5 checks" in out
    assert "  http: 3\n  tcp: 2\n" in out
    assert "  bellevue: 1\n  nord-salle-1: 4\n" in out
    assert "not-printed-secret" not in out and "not-printed-token" not in out


def test_check_lists_every_error_and_exits_1(capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`vigie check` on an invalid file prints each error with its place and exits 1."""
    monkeypatch.chdir(ROOT / "tests" / "config")
    assert main(["check", "invalid-several-errors.yaml"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("invalid-several-errors.yaml:5:3: defaults.intervall: unknown key")
    assert err[-1] == "3 error(s) in invalid-several-errors.yaml"


def test_schema_prints_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`vigie schema` prints the schema committed in config/schema.json."""
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((ROOT / "config" / "schema.json").read_text())


async def test_probe_command_runs_one_check(tmp_path: Path) -> None:
    """`vigie probe` runs one check against a live target and prints its samples."""
    import asyncio
    import subprocess
    import sys

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="fine")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = tmp_path / "vigie.yaml"
    config.write_text(f"checks:\n  - {{id: web, kind: http, target: 'http://127.0.0.1:{port}/'}}\n")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor.cli", "probe", "--config", str(config), "web",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err
    text = out.decode()
    assert 'probe_success{check="web",kind="http",target="http://127.0.0.1:' in text
    assert 'probe_http_status_code{check="web"' in text
