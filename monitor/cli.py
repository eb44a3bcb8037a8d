"""The `vigie` command: run, worker, check, schema, probe, profile, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigie.core.yamlpos import ConfigErrors
from vigie.monitor import __version__
from vigie.monitor.config import json_schema, load_config
from vigie.monitor.eventloop import CHOICES, loop_factory
from vigie.monitor.logs import command_logging, configure_logging
from vigie.probes import default_registry

if TYPE_CHECKING:
    from vigie.core.results import ProbeResult
    from vigie.monitor.exposition import Exposition
    from vigie.probes import ProbeRegistry
    from vigie.probes.base import Check


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigie", description="Infrastructure health monitoring for hospital datacenters."
    )
    parser.add_argument("--version", action="version", version=f"vigie {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, help="what to do")
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", type=Path, required=True, help="config file")
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log events written (default: info)",
    )
    _loop_option(run)
    worker = sub.add_parser(
        "worker", help="run a share of the checks and publish the results on NATS (bus:)"
    )
    worker.add_argument("--config", "-c", type=Path, required=True, help="config file")
    worker.add_argument("--name", required=True, help="this worker's unique name (its NATS key)")
    worker.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log events written (default: info)",
    )
    _loop_option(worker)
    check = sub.add_parser("check", help="validate a config file and summarise it")
    check.add_argument("config", type=Path, help="config file to validate (YAML)")
    check.add_argument(
        "--budget",
        action="store_true",
        help="also print the detection budget of every component and check, worst first",
    )
    sub.add_parser("schema", help="print the config file's JSON Schema")
    probe = sub.add_parser(
        "probe",
        help="run one check of a config now, or probe a URL or a live SNMP device",
        description="vigie probe --config FILE CHECK_ID | vigie probe URL (http://..., "
        "https://..., tcp://HOST:PORT, snmp://[COMMUNITY@]HOST[:PORT]; no config needed) | "
        "vigie probe snmp TARGET --profile NAME [--community C | --user U ...]",
    )
    probe.add_argument("--config", "-c", type=Path, help="config file (auths, profile_dirs)")
    probe.add_argument(
        "what",
        nargs="+",
        metavar="CHECK_ID | URL | snmp TARGET",
        help="a check id of --config, a URL to probe, or 'snmp' and an agent's host[:port]",
    )
    _snmp_probe_options(probe)
    profile = sub.add_parser("profile", help="validate an SNMP profile or try it on a device")
    profile_sub = profile.add_subparsers(
        dest="profile_command", required=True, help="check profile files or probe a device"
    )
    profile_check = profile_sub.add_parser("check", help="validate profile files")
    profile_check.add_argument(
        "files", type=Path, nargs="+", metavar="FILE", help="profile files (YAML) to validate"
    )
    profile_probe = profile_sub.add_parser(
        "probe", help="poll a live device once with profiles and print the samples"
    )
    profile_probe.add_argument("target", help="host[:port] of the SNMP agent")
    profile_probe.add_argument(
        "profiles", nargs="+", metavar="PROFILE", help="names of the profiles to poll with"
    )
    profile_probe.add_argument(
        "--config", "-c", type=Path, help="config file (auths, profile_dirs)"
    )
    _snmp_probe_options(profile_probe, with_profile=False)
    demo = sub.add_parser("demo", help="run the daemon against loopback demo services")
    demo.add_argument("--listen", default="127.0.0.1:9465", help="host:port for /metrics")
    demo.add_argument(
        "--scenario",
        help="outage to play on the simulated hospital: power-cut, san-degradation, "
        "server-crash or recovery (default: none, a healthy hospital)",
    )
    demo.add_argument(
        "--speed", type=float, default=1.0, help="time compression of the scenario (e.g. 10)"
    )
    demo.add_argument(
        "--ha",
        action="store_true",
        help="two replicas, one per lab datacenter (docs/ha.md): a power cut takes Nord's down",
    )
    _loop_option(demo)
    return parser


def _loop_option(parser: argparse.ArgumentParser) -> None:
    """Add --loop: the event loop a long-running command runs on (monitor/eventloop.py)."""
    parser.add_argument(
        "--loop",
        default="auto",
        choices=CHOICES,
        help="event loop: uvloop (C, the cheaper per probe), asyncio's own, or auto: uvloop"
        " when installed (default: auto)",
    )


def _snmp_probe_options(parser: argparse.ArgumentParser, with_profile: bool = True) -> None:
    """Add the options of a live SNMP probe: profiles and credentials, as net-snmp names them."""
    if with_profile:
        parser.add_argument(
            "--profile", "-p", action="append", default=[], help="profile name (repeatable)"
        )
    parser.add_argument(
        "--auth", help="name of an snmp.auths entry of --config (default: public_v2)"
    )
    parser.add_argument("--version", "-v", choices=["1", "2c", "3"], help="SNMP version")
    parser.add_argument("--community", help="v1/v2c community (visible in ps: prefer the file)")
    parser.add_argument("--community-file", type=Path, help="file holding the community")
    parser.add_argument("--user", "-u", help="v3 user name")
    parser.add_argument("--auth-protocol", "-a", default="SHA", help="v3 auth protocol")
    parser.add_argument("--auth-password-file", type=Path, help="file with the v3 auth password")
    parser.add_argument("--priv-protocol", "-x", default="AES", help="v3 privacy protocol")
    parser.add_argument("--priv-password-file", type=Path, help="file with the v3 privacy password")
    parser.add_argument("--timeout", "-t", type=float, default=10.0, help="seconds (default 10)")


def _cli_auth(args: argparse.Namespace) -> dict[str, object] | None:
    """Return an snmp.auths entry from the credential options, or None when none are given."""
    version = args.version
    if version is None and (args.community or args.community_file):
        version = "2c"
    if version is None and args.user:
        version = "3"
    if version is None:
        return None
    if version == "3":
        entry: dict[str, object] = {"version": 3, "username": args.user}
        if args.auth_password_file is not None:
            entry["auth_protocol"] = args.auth_protocol
            entry["auth_password_file"] = str(args.auth_password_file)
        if args.priv_password_file is not None:
            entry["priv_protocol"] = args.priv_protocol
            entry["priv_password_file"] = str(args.priv_password_file)
        return entry
    entry = {"version": 1 if version == "1" else 2}
    if args.community_file is not None:
        entry["community_file"] = str(args.community_file)
    else:
        entry["community"] = args.community if args.community is not None else "public"
    return entry


async def _probe_snmp(target: str, profiles: Sequence[str], args: argparse.Namespace) -> int:
    """Poll a live SNMP device once with profiles; print its samples and debug log."""
    from prometheus_client import CollectorRegistry

    from vigie.monitor.exposition import Exposition
    from vigie.monitor.scheduler import Scheduler, SchedulerMetrics
    from vigie.monitor.store import ResultStore
    from vigie.probes import ProbeRegistry
    from vigie.probes.http import make_session
    from vigie.probes.snmp import SnmpProbe, SnmpSection
    from vigie.probes.snmp.once import command_line_check

    section = None
    if args.config is not None:
        loaded = load_config(args.config, default_registry())
        section = getattr(loaded.config, "snmp")  # noqa: B009 - a field of the dynamic model
        assert isinstance(section, SnmpSection)
    try:
        check = command_line_check(
            target,
            profiles,
            section=section,
            auth=args.auth,
            auth_entry=_cli_auth(args),
            timeout=args.timeout,
        )
    except ValueError as exc:  # pydantic's ValidationError too
        print(f"vigie probe snmp {target}: {exc}", file=sys.stderr)
        return 2
    async with make_session() as session:
        own = CollectorRegistry()
        registry = ProbeRegistry([SnmpProbe()])
        scheduler = Scheduler(registry, ResultStore(), session, SchedulerMetrics(own))
        result = await scheduler.run(check, keep_logs=True)
    return _print_result(check, result, Exposition(own))


def cmd_profile(args: argparse.Namespace) -> int:
    """`vigie profile check FILE...` and `vigie profile probe TARGET PROFILE...`."""
    if args.profile_command == "check":
        from vigie.probes.snmp.profiles.docs import check_profile_command

        codes = [check_profile_command(path) for path in args.files]
        return max(codes)
    try:
        return asyncio.run(_probe_snmp(args.target, args.profiles, args))
    except ConfigErrors as exc:
        print(exc, file=sys.stderr)
        return 2


PROBE_USAGE = (
    "usage: vigie probe --config FILE CHECK_ID\n"
    "       vigie probe URL   (http://..., https://..., tcp://HOST:PORT, "
    "snmp://[COMMUNITY@]HOST[:PORT])\n"
    "       vigie probe snmp TARGET --profile NAME [--community C | --user U ...]"
)


def cmd_probe(args: argparse.Namespace) -> int:
    """`vigie probe --config FILE CHECK_ID`, `vigie probe URL` or `vigie probe snmp TARGET`."""
    what: list[str] = args.what
    try:
        if len(what) == 2 and what[0] == "snmp":
            return asyncio.run(_probe_snmp(what[1], args.profile, args))
        if len(what) == 1 and "://" in what[0]:
            return _probe_url(what[0], args)
        if len(what) != 1 or args.config is None:
            print(PROBE_USAGE, file=sys.stderr)
            return 2
        return asyncio.run(_probe_once(args.config, what[0]))
    except ConfigErrors as exc:
        print(exc, file=sys.stderr)
        return 1


def _probe_url(url: str, args: argparse.Namespace) -> int:
    """Probe a URL once with default settings, no config file needed."""
    from urllib.parse import unquote

    from pydantic import ValidationError

    from vigie.monitor.config import build_config_model, build_plan

    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "snmp":
        community, _, host_port = rest.rstrip("/").rpartition("@")
        if community and args.community is None and args.community_file is None:
            args.community = unquote(community)
        return asyncio.run(_probe_snmp(host_port, args.profile, args))
    kinds = {"http": ("http", url), "https": ("http", url), "tcp": ("tcp", rest.rstrip("/"))}
    if scheme not in kinds:
        print(f"vigie probe {url}: unknown scheme {scheme!r}\n{PROBE_USAGE}", file=sys.stderr)
        return 2
    kind, target = kinds[scheme]
    registry = default_registry()
    check = {"id": "probe", "kind": kind, "target": target}
    raw = {"checks": [{**check, "interval": args.timeout, "timeout": args.timeout}]}
    try:
        config = build_config_model(registry).model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        print(f"vigie probe {url}: {reasons}", file=sys.stderr)
        return 2
    plan = build_plan(config, registry)
    return asyncio.run(_run_check(registry, plan["probe"]))


def _print_result(check: Check, result: ProbeResult, exp: Exposition) -> int:
    """Print a probe's debug log and samples as /metrics shows them; return the exit code."""
    from vigie.monitor.exposition import check_labels, label_text, result_samples

    for line in result.logs:
        print(f"# log: {line}")
    print(
        exp.render_text(
            exp.render_samples(label_text(check_labels(check)), result_samples(result))
        ),
        end="",
    )
    if not result.success:
        print(f"probe failed: {result.error}", file=sys.stderr)
    elif result.error is not None:
        print(f"probe succeeded with a {result.error}", file=sys.stderr)
    return 0 if result.success else 1


def cmd_check(path: Path, budget: bool = False) -> int:
    """Validate a config; print a summary (and the detection budgets), or every error and exit 1."""
    try:
        loaded = load_config(path, default_registry())
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} error(s) in {path}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if "icmp" in loaded.checks_by_kind():  # refused sockets would only show at run time
        from vigie.probes.icmp import ping_permission_problem

        if (ping_problem := ping_permission_problem()) is not None:
            print(f"warning: {ping_problem}", file=sys.stderr)
    state_dir = loaded.config.state_dir
    if state_dir is not None:  # what vigie run would only find out on its first write
        from vigie.monitor.statedir import check_directory

        problem = check_directory(state_dir)
        if problem is not None:
            cause, fix = problem
            print(
                f"{path}: state_dir: cannot write {state_dir}: {cause}. Fix: {fix}", file=sys.stderr
            )
            print(f"1 error(s) in {path}", file=sys.stderr)
            return 1
    print(f"{path}: OK, {len(loaded.plan)} checks, {len(loaded.config.components)} components")
    print("checks by kind:")
    for kind, count in loaded.checks_by_kind().items():
        print(f"  {kind}: {count}")
    print("checks by site:")
    for site, count in loaded.sites().items():
        print(f"  {site}: {count}")
    print(f"listen: {loaded.config.web.listen}")
    if budget:
        from vigie.monitor.health.budget import budget_table

        print("detection budget, worst case from a fault to the first notification:")
        for line in budget_table(loaded.budget()):
            print(f"  {line}".rstrip())
    return 0


async def _probe_once(path: Path, check_id: str) -> int:
    """Run the check `check_id` of a config file once."""
    registry = default_registry()
    loaded = load_config(path, registry)
    check = loaded.plan.get(check_id)
    if check is None:
        print(
            f"unknown check {check_id!r}; checks: {', '.join(sorted(loaded.plan))}", file=sys.stderr
        )
        return 2
    return await _run_check(registry, check)


async def _run_check(registry: ProbeRegistry, check: Check) -> int:
    """Run one check now through a scheduler of its own; print its log and samples."""
    from prometheus_client import CollectorRegistry

    from vigie.monitor.exposition import Exposition
    from vigie.monitor.scheduler import Scheduler, SchedulerMetrics
    from vigie.monitor.store import ResultStore
    from vigie.probes.http import make_session

    own = CollectorRegistry()
    async with make_session() as session:
        scheduler = Scheduler(registry, ResultStore(), session, SchedulerMetrics(own))
        result = await scheduler.run(check, keep_logs=True)
    return _print_result(check, result, Exposition(own))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vigie` console script."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        return cmd_check(args.config, budget=args.budget)
    if args.command == "schema":
        print(json.dumps(json_schema(default_registry()), indent=2, sort_keys=True))
        return 0
    if args.command == "probe":
        with command_logging():
            return cmd_probe(args)
    if args.command == "profile":
        with command_logging():
            return cmd_profile(args)
    if args.command == "run":
        from vigie.monitor.app import run_daemon

        configure_logging(args.log_level)
        return _run_loop(run_daemon(args.config, default_registry(), os.environ), args.loop)
    if args.command == "worker":
        from vigie.monitor.worker import run_worker

        configure_logging(args.log_level)
        return _run_loop(
            run_worker(args.config, args.name, default_registry(), os.environ), args.loop
        )
    if args.command == "demo":
        from vigie.monitor.demo import run_demo

        configure_logging("info")
        return _run_loop(
            run_demo(args.listen, scenario=args.scenario, speed=args.speed, ha=args.ha), args.loop
        )
    return 2


def _run_loop(main: Coroutine[Any, Any, int], choice: str) -> int:
    """Run a long-running command's coroutine on the chosen loop; 2 if it cannot be had."""
    try:
        factory = loop_factory(choice)
    except ValueError as exc:
        main.close()
        print(f"vigie: {exc}", file=sys.stderr)
        return 2
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


if __name__ == "__main__":
    sys.exit(main())
