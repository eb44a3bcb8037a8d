"""The `vigie` command line: check, schema, probe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from aiohttp import web

from monitor.cli import main
from tests.conftest import free_port

ROOT = Path(__file__).parent.parent


def test_check_prints_summary(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vigie check` on the shipped example passes with nothing set, as its header says."""
    for name in [n for n in os.environ if n.startswith("VIGIE_")]:
        monkeypatch.delenv(name)
    assert main(["check", str(ROOT / "config" / "vigie.example.yaml")]) == 0
    captured = capsys.readouterr()
    assert "OK, 8 checks, 9 components" in captured.out
    assert "  http: 3\n  snmp: 2\n  tcp: 3\n" in captured.out
    assert "  bellevue: 2\n  nord-salle-1: 6\n" in captured.out
    assert "environment variable" not in captured.err and "error" not in captured.err


def test_check_lists_every_error_and_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
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
            sys.executable,
            "-m",
            "monitor.cli",
            "probe",
            "--config",
            str(config),
            "web",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err
    text = out.decode()
    assert 'probe_success{check="web",kind="http",target="http://127.0.0.1:' in text
    assert 'probe_http_status_code{check="web"' in text
