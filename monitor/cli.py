"""The `vigie` command: run, check, schema, probe, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from monitor import __version__
from monitor.config import ConfigErrors, json_schema, load_config
from monitor.logs import configure_logging
from probes import default_registry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigie", description="Infrastructure health monitoring for hospital datacenters."
    )
    parser.add_argument("--version", action="version", version=f"vigie {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", "-c", type=Path, required=True, help="config file")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check", help="validate a config file and summarise it")
    check.add_argument("config", type=Path)
    sub.add_parser("schema", help="print the config file's JSON Schema")
    probe = sub.add_parser("probe", help="run one check of a config now and show its output")
    probe.add_argument("--config", "-c", type=Path, required=True)
    probe.add_argument("check_id", help="id of the check to run")
    demo = sub.add_parser("demo", help="run the daemon against loopback demo services")
    demo.add_argument("--listen", default="127.0.0.1:9465", help="host:port for /metrics")
    return parser


def cmd_check(path: Path) -> int:
    """Validate a config; print a summary, or every error and exit 1."""
    try:
        loaded = load_config(path, default_registry())
    except ConfigErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"{len(exc.errors)} error(s) in {path}", file=sys.stderr)
        return 1
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: OK, {len(loaded.plan)} checks, {len(loaded.config.components)} components")
    print("checks by kind:")
    for kind, count in loaded.checks_by_kind().items():
        print(f"  {kind}: {count}")
    print("checks by site:")
    for site, count in loaded.sites().items():
        print(f"  {site}: {count}")
    print(f"listen: {loaded.config.web.listen}")
    return 0


async def _probe_once(path: Path, check_id: str) -> int:
    from prometheus_client import CollectorRegistry

    from monitor.exposition import Exposition, check_labels, label_text, result_samples
    from monitor.results import ResultStore
    from monitor.scheduler import Scheduler, SchedulerMetrics
    from probes.http import make_session

    registry = default_registry()
    loaded = load_config(path, registry)
    check = loaded.plan.get(check_id)
    if check is None:
        print(
            f"unknown check {check_id!r}; checks: {', '.join(sorted(loaded.plan))}", file=sys.stderr
        )
        return 2
    own = CollectorRegistry()
    async with make_session() as session:
        scheduler = Scheduler(registry, ResultStore(), session, SchedulerMetrics(own))
        result = await scheduler.run(check)
    exp = Exposition(own)
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
    return 0 if result.success else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vigie` console script."""
    args = _parser().parse_args(argv)
    if args.command == "check":
        return cmd_check(args.config)
    if args.command == "schema":
        print(json.dumps(json_schema(default_registry()), indent=2, sort_keys=True))
        return 0
    if args.command == "probe":
        try:
            return asyncio.run(_probe_once(args.config, args.check_id))
        except ConfigErrors as exc:
            print(exc, file=sys.stderr)
            return 1
    if args.command == "run":
        from monitor.app import run_daemon

        configure_logging(args.log_level)
        return asyncio.run(run_daemon(args.config, default_registry(), os.environ))
    if args.command == "demo":
        from monitor.demo import run_demo

        configure_logging("info")
        return asyncio.run(run_demo(args.listen))
    return 2


if __name__ == "__main__":
    sys.exit(main())
