"""The nagios probe running Debian's monitoring-plugins for real against loopback servers."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import time
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from tests.conftest import require_binary
from tests.probes.conftest import make_check, refused_port, sample, serve_http, serve_tcp
from tests.waiting import wait_for
from vigie.core.results import ProbeResult
from vigie.monitor.config import load_config
from vigie.monitor.exposition import Exposition
from vigie.probes.base import Check, ProbeContext, ProbeRegistry
from vigie.probes.nagios import (
    NagiosProbe,
    NagiosSettings,
    parse_output,
    parse_perfdata,
    perfdata_samples,
)

PLUGINS = "/usr/lib/nagios/plugins"


@pytest.fixture
def probe() -> NagiosProbe:
    """A fresh nagios probe."""
    return NagiosProbe()


def plugin(name: str) -> str:
    """Return the path of a monitoring-plugins program, skipping when it is not installed."""
    return require_binary(f"{PLUGINS}/{name}", "monitoring-plugins-basic")


def sh(script: str) -> list[str]:
    """Return the argv running a shell script (the test's own plugin)."""
    return ["/bin/sh", "-c", script]


async def run(probe: NagiosProbe, check: Check[NagiosSettings], ctx: ProbeContext) -> ProbeResult:
    """Run the probe under the check's timeout, as the scheduler does."""
    async with asyncio.timeout(check.timeout):
        return await probe(check, ctx)


def dead(pid: int) -> bool:
    """Return whether pid no longer runs: gone, or a zombie waiting for its (new) parent."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def gone(pid: int) -> bool:
    """Return whether no process (not even a zombie) has this pid."""
    try:
        os.kill(pid, 0)  # succeeds on a zombie too
    except ProcessLookupError:
        return True
    return False


# --------------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("code", "success", "error"),
    [
        (0, True, None),
        (1, True, None),
        (2, False, "CRITICAL: disk on fire"),
        (3, False, "UNKNOWN: disk on fire"),
    ],
)
async def test_check_dummy_exit_codes(
    probe: NagiosProbe, ctx: ProbeContext, code: int, success: bool, error: str | None
) -> None:
    """check_dummy's exit codes map to nagios_status; OK and WARNING succeed, others fail."""
    check = make_check(
        probe, "localhost", command=[plugin("check_dummy"), str(code), "disk on fire"]
    )
    result = await run(probe, check, ctx)
    assert (result.success, result.error) == (success, error)
    assert sample(result, "nagios_status") == code


async def test_exit_code_outside_guidelines_is_unknown(
    probe: NagiosProbe, ctx: ProbeContext
) -> None:
    """An exit code above 3 is UNKNOWN and the reason names the code."""
    check = make_check(probe, "localhost", command=sh("echo 'it broke'; exit 42"))
    result = await run(probe, check, ctx)
    assert result.error == "exit 42: it broke"
    assert sample(result, "nagios_status") == 3


async def test_no_stdout_uses_stderr_first_line(probe: NagiosProbe, ctx: ProbeContext) -> None:
    """A plugin failing silently on stdout reports its first stderr line."""
    check = make_check(probe, "localhost", command=sh("echo 'no such option -Z' >&2; exit 3"))
    result = await run(probe, check, ctx)
    assert result.error == "UNKNOWN: no such option -Z"


async def test_plugin_killed_by_signal(probe: NagiosProbe, ctx: ProbeContext) -> None:
    """A plugin dying on a signal is UNKNOWN and says which signal."""
    check = make_check(probe, "localhost", command=sh("kill -SEGV $$"))
    result = await run(probe, check, ctx)
    assert result.error == "UNKNOWN: plugin killed by signal 11"
    assert sample(result, "nagios_status") == 3


async def test_missing_program(probe: NagiosProbe, ctx: ProbeContext) -> None:
    """A plugin path that does not exist fails with the path and the OS reason."""
    check = make_check(probe, "localhost", command=["/nonexistent/check_x"])
    result = await run(probe, check, ctx)
    assert result.error == "cannot run /nonexistent/check_x: No such file or directory"
    assert sample(result, "nagios_status") == 3


# --------------------------------------------------------------------------- real plugins


async def test_check_tcp_against_loopback(probe: NagiosProbe, ctx: ProbeContext) -> None:
    """check_tcp on a listening loopback port is OK, with its time perfdata in seconds."""

    async def hello(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close at once."""
        writer.close()

    async with serve_tcp(hello) as port:
        check = make_check(
            probe,
            f"127.0.0.1:{port}",
            command=[plugin("check_tcp"), "-H", "127.0.0.1", "-p", str(port)],
        )
        result = await run(probe, check, ctx)
    assert result.success, result.error
    assert sample(result, "nagios_status") == 0
    assert 0 <= sample(result, "nagios_perfdata_seconds", label="time") < 5
    assert check.host == "127.0.0.1"


async def test_check_tcp_refused_is_critical(probe: NagiosProbe, ctx: ProbeContext) -> None:
    """check_tcp on a closed port is CRITICAL with the plugin's own first line as reason."""
    port = refused_port()
    check = make_check(
        probe, "127.0.0.1", command=[plugin("check_tcp"), "-H", "{target}", "-p", str(port)]
    )
    result = await run(probe, check, ctx)
    assert not result.success
    assert result.error == (
        f"CRITICAL: connect to address 127.0.0.1 and port {port}: Connection refused"
    )
    assert sample(result, "nagios_status") == 2


async def test_check_http_against_aiohttp(probe: NagiosProbe, ctx: ProbeContext) -> None:
    """check_http on a loopback aiohttp server: OK with time in seconds and size in bytes."""

    async def page(_: web.Request) -> web.Response:
        """A small health page."""
        return web.Response(text="status: ok\n" * 10)

    async def broken(_: web.Request) -> web.Response:
        """A failing page."""
        return web.Response(status=500, text="boom")

    app = web.Application()
    app.router.add_get("/health", page)
    app.router.add_get("/broken", broken)
    async with serve_http(app) as base:
        port = base.rsplit(":", 1)[1]
        argv = [plugin("check_http"), "-H", "127.0.0.1", "-p", port, "-u"]
        ok = await run(probe, make_check(probe, base, command=[*argv, "/health"]), ctx)
        bad = await run(probe, make_check(probe, base, command=[*argv, "/broken"]), ctx)
    assert ok.success, ok.error
    assert sample(ok, "nagios_perfdata_bytes", label="size") > 110
    assert 0 <= sample(ok, "nagios_perfdata_seconds", label="time") < 5
    assert not bad.success
    assert bad.error is not None and bad.error.startswith("HTTP CRITICAL")
    assert "500" in bad.error
    assert sample(bad, "nagios_status") == 2


async def test_check_load_thresholds(probe: NagiosProbe, ctx: ProbeContext) -> None:
    """check_load's unitless perfdata comes with its warning and critical thresholds."""
    argv = [plugin("check_load"), "-w", "900,800,700", "-c", "990,980,970"]
    result = await run(probe, make_check(probe, "localhost", command=argv), ctx)
    assert result.success, result.error
    assert sample(result, "nagios_perfdata", label="load1") >= 0
    assert sample(result, "nagios_perfdata_warning", label="load5") == 800
    assert sample(result, "nagios_perfdata_critical", label="load15") == 970


async def test_check_disk_bytes(probe: NagiosProbe, ctx: ProbeContext) -> None:
    """check_disk's perfdata of / is in bytes, thresholds scaled the same way."""
    argv = [plugin("check_disk"), "-w", "1%", "-c", "1%", "-p", "/", "-u", "MB"]
    result = await run(probe, make_check(probe, "localhost", command=argv), ctx)
    assert sample(result, "nagios_status") in (0, 1, 2)
    used = sample(result, "nagios_perfdata_bytes", label="/")
    stat = os.statvfs("/")
    total = stat.f_blocks * stat.f_frsize
    assert 0 < used <= total
    assert used % (1024 * 1024) == 0  # MB means MiB in monitoring-plugins
    assert sample(result, "nagios_perfdata_warning_bytes", label="/") <= total


# --------------------------------------------------------------------------- process control


async def test_timeout_kills_the_process_group(
    probe: NagiosProbe, ctx: ProbeContext, tmp_path: Path
) -> None:
    """On timeout the plugin and its child are killed and reaped: no process nor zombie left."""
    pids = tmp_path / "pids"
    script = f"/bin/sleep 30 & echo $$ $! > {pids}.tmp; mv {pids}.tmp {pids}; wait"
    check = make_check(probe, "localhost", command=sh(script))
    loop = asyncio.get_running_loop()
    deadlines: list[asyncio.Timeout] = []

    async def scheduled() -> ProbeResult:
        """The scheduler's way to run a check: under asyncio.timeout."""
        async with asyncio.timeout(None) as deadline:
            deadlines.append(deadline)
            return await probe(check, ctx)

    task = asyncio.ensure_future(scheduled())
    try:
        await wait_for(pids.exists, "the plugin and its child to start")
        deadlines[0].reschedule(loop.time())  # the check's timeout expires now
        await wait_for(task.done, "the run to end once its timeout expired", within=5)
        assert isinstance(task.exception(), TimeoutError)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    leader, child = (int(p) for p in pids.read_text().split())
    await wait_for(lambda: gone(leader), "the plugin process reaped (no zombie left)")
    # The child was re-parented to init when the plugin died: init reaps it, not Vigie.
    await wait_for(lambda: dead(child), "the plugin's child killed")


async def test_sleeping_plugin_under_scheduler_like_timeout(
    probe: NagiosProbe, ctx: ProbeContext
) -> None:
    """/bin/sleep as a plugin is cut off by the timeout instead of blocking the probe."""
    check = make_check(probe, "localhost", command=["/bin/sleep", "30"])
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await probe(check, ctx)
    assert time.monotonic() - started < 2


async def test_huge_output_is_bounded(probe: NagiosProbe, ctx: ProbeContext) -> None:
    """Megabytes of output are drained (the plugin never blocks) and the reason is bounded."""
    script = "printf 'CRITICAL '; head -c 3000000 /dev/zero | tr '\\0' x; exit 2"
    check = make_check(probe, "localhost", command=sh(script), max_output_bytes=4096)
    result = await run(probe, check, ctx)
    assert result.error is not None and result.error.startswith("CRITICAL xxx")
    assert len(result.error) <= 512
    assert any("dropped_bytes=2995" in line for line in ctx.log.lines)


async def test_clean_environment_with_secret_file(
    probe: NagiosProbe, ctx: ProbeContext, tmp_path: Path
) -> None:
    """The plugin sees only PATH, LC_ALL, env and env_files; the secret is never logged."""
    secret = tmp_path / "token"
    secret.write_text("s3cret-token\n")
    os.environ["VIGIE_TEST_LEAK"] = "leak"
    try:
        script = (
            f'[ "$TOKEN" = "$(cat {secret})" ] && [ "$SITE" = nord ] && [ -z "$VIGIE_TEST_LEAK" ]'
            ' && [ "$PATH" = /usr/bin:/bin ] && [ "$LC_ALL" = C ]'
            # dash adds PWD (and maybe SHLVL, _) itself: the rest is what Vigie passed.
            ' && [ "$(env | grep -cv -e ^PWD= -e ^SHLVL= -e ^_=)" -eq 4 ] && [ "$(pwd)" = / ]'
            " && echo 'OK env' || { echo CRITICAL $(env | cut -d= -f1 | tr '\\n' ' '); exit 2; }"
        )
        check = make_check(
            probe,
            "localhost",
            command=sh(script),
            env={"SITE": "nord"},
            env_files={"TOKEN": str(secret)},
        )
        result = await run(probe, check, ctx)
    finally:
        del os.environ["VIGIE_TEST_LEAK"]
    assert result.success, result.error
    settings = check.settings
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())
    assert not any("s3cret" in line for line in ctx.log.lines)


# --------------------------------------------------------------------------- output parsing


async def test_garbage_perfdata_is_skipped_and_counted(
    probe: NagiosProbe, ctx: ProbeContext
) -> None:
    """Unreadable perfdata items are skipped and counted; the readable ones are kept."""
    script = "echo \"OK | a=1 b=zz =3 'open=4 c=2XB d=5s;;;;;;extra\"; printf '\\001\\377'"
    result = await run(probe, make_check(probe, "localhost", command=sh(script)), ctx)
    assert result.success
    assert sample(result, "nagios_perfdata", label="a") == 1
    assert sample(result, "nagios_perfdata_seconds", label="d") == 5
    assert sample(result, "nagios_perfdata_invalid") == 4


def test_multiline_output_and_perfdata() -> None:
    """Perfdata after `|` on line one and after the first `|` of the long text are joined."""
    out = parse_output(
        "DISK OK - all fine | /=2643MB;5948;5958;0;5968\n"
        "/ 15272 MB (77%);\n"
        "/boot 68 MB (69%); | /boot=68MB;88;93;0;98\n"
        "/home=69357MB;253404;253409;0;253414\n"
    )
    assert out.first_line == "DISK OK - all fine"
    assert out.long_text == "/ 15272 MB (77%);\n/boot 68 MB (69%);"
    items, bad = parse_perfdata(out.perfdata)
    assert bad == 0
    assert [i.label for i in items] == ["/", "/boot", "/home"]
    assert items[1].value == 68 * 1024**2 and items[1].max == 98 * 1024**2


@pytest.mark.parametrize(
    ("text", "suffix", "value", "warn", "crit"),
    [
        ("time=0.5s;1;2", "_seconds", 0.5, 1.0, 2.0),
        ("rta=12.5ms;100;500;0", "_seconds", 0.0125, 0.1, 0.5),
        ("t=250us", "_seconds", 0.00025, None, None),
        ("used=42%;80;90;0;100", "_ratio", 0.42, 0.8, 0.9),
        ("mem=2KB", "_bytes", 2048.0, None, None),
        ("mem=1.5GB;2;3", "_bytes", 1.5 * 1024**3, 2 * 1024**3, 3 * 1024**3),
        ("pkts=123c", "_total", 123.0, None, None),
        ("users=3;@1:5;~:10", "", 3.0, None, None),
        ("'disk c: used'=1,5TB", "_bytes", 1.5 * 1024**4, None, None),
        ("load=U;1;2", "", math.nan, 1.0, 2.0),
    ],
)
def test_perfdata_units_to_base_units(
    text: str, suffix: str, value: float, warn: float | None, crit: float | None
) -> None:
    """Each guideline unit maps to its base-unit family; range thresholds are not numbers."""
    (item,), bad = parse_perfdata(text)
    assert bad == 0
    assert item.unit.suffix == suffix
    assert math.isnan(item.value) if math.isnan(value) else item.value == pytest.approx(value)
    assert item.warn == (pytest.approx(warn) if warn is not None else None)
    assert item.crit == (pytest.approx(crit) if crit is not None else None)


def test_quoted_labels_with_spaces_and_quotes() -> None:
    """Quoted labels keep their spaces and '' stands for one quote."""
    items, bad = parse_perfdata("'C:\\ Label: ''sys'''=10%;80;90 plain=1")
    assert bad == 0
    assert [i.label for i in items] == ["C:\\ Label: 'sys'", "plain"]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"command": []}, "at least 1 item"),
        ({"command": ["check_dummy", "0"]}, "command[0] must be an absolute path"),
        ({"command": ["/bin/true"], "env": {"BAD-NAME": "x"}}, "not a valid variable name"),
        ({"command": ["/bin/true"], "env_files": {"T": "/nonexistent/secret"}}, "cannot read"),
        ({"command": ["/bin/true"], "shell": True}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_settings(settings: dict[str, object], message: str) -> None:
    """Bad settings are rejected with a message naming the field and the reason."""
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        NagiosSettings.model_validate(settings)


def test_target_with_spaces_is_rejected(probe: NagiosProbe) -> None:
    """A target with spaces is refused with the reason."""
    with pytest.raises(ValueError, match="without spaces"):
        probe.parse_target("db host")


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("db.chu.local", "db.chu.local"),
        ("db.chu.local:5432", "db.chu.local"),
        ("[::1]:22", "::1"),
        ("[::1]", "::1"),
        ("https://dpi.chu.local/health", "dpi.chu.local"),
        ("db.chu.local:postgres", "db.chu.local:postgres"),
    ],
)
def test_host_of(probe: NagiosProbe, target: str, host: str) -> None:
    """The per-host limit uses the host of a host, host:port or URL target."""
    assert probe.host_of(target) == host


def test_config_loads_a_nagios_check(tmp_path: Path) -> None:
    """A config with a nagios check and a secret env file loads through the registry."""
    (tmp_path / "token").write_text("t0ken\n")
    config = tmp_path / "vigie.yaml"
    config.write_text(
        "checks:\n"
        "  - id: dpi-db\n"
        "    kind: nagios\n"
        "    target: db.chu.local:5432\n"
        "    nagios:\n"
        "      command: [/usr/lib/nagios/plugins/check_tcp, -H, '{target}']\n"
        "      env_files: {TOKEN: token}\n"
    )
    loaded = load_config(config, ProbeRegistry([NagiosProbe()]))
    check = loaded.plan["dpi-db"]
    assert isinstance(check.settings, NagiosSettings)
    assert check.settings.environment()["TOKEN"] == "t0ken"
    assert check.host == "db.chu.local"


def test_perfdata_families_pass_promtool_lint() -> None:
    """Every perfdata family as /metrics renders it passes `promtool check metrics`."""
    promtool = require_binary("/usr/bin/promtool", "prometheus")
    out = parse_output("OK | time=0.5s;1;2 used=42%;80;90 mem=2KB;3;4 pkts=12c;5;6 load=1.5;2;3")
    items, _ = parse_perfdata(out.perfdata)
    exp = Exposition(CollectorRegistry())
    text = exp.render_text(exp.render_samples('check="c"', perfdata_samples(items)))
    assert "# TYPE nagios_perfdata_total counter" in text
    lint = subprocess.run(
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert lint.returncode == 0 and not lint.stdout + lint.stderr, lint.stdout + lint.stderr


def test_same_config_gives_equal_settings(tmp_path: Path) -> None:
    """Two loads of the same settings compare equal; a changed secret file makes them differ."""
    secret = tmp_path / "token"
    secret.write_text("one\n")
    opts = {"command": ["/bin/true"], "env_files": {"TOKEN": str(secret)}}
    first = NagiosSettings.model_validate(opts)
    assert first == NagiosSettings.model_validate(opts)
    secret.write_text("two\n")
    assert first != NagiosSettings.model_validate(opts)
