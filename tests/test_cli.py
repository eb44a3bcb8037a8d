"""The `vigie` command line: check, schema, probe."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from tests.conftest import free_port, serving
from tests.snmp_peers import running_snmpd
from vigie.monitor.cli import _parser, main

ROOT = Path(__file__).parent.parent


def test_check_prints_summary(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vigie check` on the shipped example passes with nothing set, as its header says."""
    for name in [n for n in os.environ if n.startswith("VIGIE_")]:
        monkeypatch.delenv(name)
    assert main(["check", str(ROOT / "config" / "vigie.example.yaml")]) == 0
    captured = capsys.readouterr()
    assert "OK, 10 checks, 9 components" in captured.out
    assert "  fhir: 1\n  http: 4\n  smtp: 2\n  snmp: 2\n  tcp: 1\n" in captured.out
    assert "  bellevue: 2\n  nord-salle-1: 8\n" in captured.out
    assert "environment variable" not in captured.err and "error" not in captured.err


def test_check_counts_checks_of_a_component_without_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A component with no site gives its checks to "(no site)" instead of crashing the count."""
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "checks:\n  - {id: web, kind: tcp, target: '127.0.0.1:1'}\n"
        "components:\n  - {id: app, kind: application, checks: [web]}\n"
    )
    assert main(["check", str(config)]) == 0
    assert "  (no site): 1\n" in capsys.readouterr().out


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
            "vigie.monitor.cli",
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


def test_every_argument_and_flag_has_help() -> None:
    """Each command, sub-command, argument and flag of `vigie` has a help text."""
    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, where: str) -> None:
        for action in parser._actions:
            name = "/".join(action.option_strings) or action.dest
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{where} {name}")
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for command, sub in action.choices.items():
                    if not helps.get(command):
                        missing.append(f"{where} {command} (command)")
                    walk(sub, f"{where} {command}")

    walk(_parser(), "vigie")
    assert missing == []


async def run_vigie(*argv: str) -> tuple[int, str, str]:
    """Run `python -m monitor.cli ARGV` in a subprocess; return its exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vigie.monitor.cli",
        *argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_probe_http_url_needs_no_config_and_logs_each_event_once() -> None:
    """`vigie probe http://...` runs without a config; each probe event is printed once."""

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="fine")

    app = web.Application()
    app.router.add_get("/health", ok)
    async with serving(app) as port:
        code, out, err = await run_vigie("probe", f"http://127.0.0.1:{port}/health")
    assert code == 0, err
    assert (
        f'probe_success{{check="probe",kind="http",target="http://127.0.0.1:{port}/health"}} 1'
        in out
    )
    assert 'probe_http_status_code{check="probe"' in out and "} 200\n" in out
    assert len(re.findall(r"\bhttp_request\b", out + err)) == 1, out + err
    assert "# log: http_request method=GET" in out


async def test_probe_tcp_url_needs_no_config() -> None:
    """`vigie probe tcp://host:port` connects to a live listener without a config file."""
    accepted = asyncio.Event()

    async def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        code, out, err = await run_vigie("probe", f"tcp://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()
    assert code == 0, err
    assert f'probe_success{{check="probe",kind="tcp",target="127.0.0.1:{port}"}} 1' in out
    assert accepted.is_set()
    assert len(re.findall(r"\btcp_connect\b", out + err)) == 1, out + err


def test_probe_snmp_url_with_a_community(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vigie probe snmp://COMMUNITY@HOST:PORT` polls a real snmpd; the community is not shown."""
    with running_snmpd(tmp_path) as agent:
        code = main(["probe", f"snmp://{agent.community}@{agent.target()}", "-p", "ups-mib"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert 'ups_on_battery{check="probe",kind="snmp"' in captured.out
    assert agent.community not in captured.out + captured.err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("tcp://pacs.chu.local", "vigie probe tcp://pacs.chu.local: must be host:port"),
        ("ftp://files.chu.local/", "vigie probe ftp://files.chu.local/: unknown scheme 'ftp'"),
    ],
)
def test_probe_bad_url_says_why(url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A URL vigie probe cannot use exits 2 with the URL and the reason."""
    assert main(["probe", url]) == 2
    assert capsys.readouterr().err.startswith(message)


async def test_probe_https_url_needs_no_config(tmp_path: Path) -> None:
    """`vigie probe https://...` runs without a config and verifies the certificate.

    The server's certificate comes from a test CA the system does not trust: the probe runs,
    fails, and says why (a TLS verification error), as the default settings require.
    """
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="fine")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx).start()
    try:
        code, out, err = await run_vigie("probe", f"https://127.0.0.1:{port}/")
    finally:
        await runner.cleanup()
    assert code == 1, out + err
    target = f"https://127.0.0.1:{port}/"
    assert f'probe_success{{check="probe",kind="http",target="{target}"}} 0' in out
    assert "probe failed:" in err and "certificate" in err.lower(), err
