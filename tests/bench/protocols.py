"""Protocol probes: CPU per check of Vigie's hl7, dicom, dns, icmp and smtp probes, each beside
what a user would run otherwise, a process per check.

- hl7 and dicom: a Python script per check driving the same library a user would reach for
  (python-hl7's MLLPClient; pynetdicom's C-ECHO), as a Nagios-style plugin does.
- dns, icmp, smtp: the monitoring-plugins `check_dig` (check_dns cannot name a port),
  `check_ping` and `check_smtp`.

Peers run in child processes so their CPU is not counted: the lab's MLLP engine
(lab/feed.py), a pynetdicom Verification SCP, dnsmasq, aiosmtpd; ICMP goes to 127.0.0.1 in a
network namespace where net.ipv4.ping_group_range lets the probe open its ICMP socket (both
sides run there). Vigie's side: N checks in a row in this process, CPU from
time.process_time (its event loop included). The other side: N processes in a row, CPU of
the children (RUSAGE_CHILDREN) plus this process's own spawning them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.bench.common import children_cpu, free_port, log, stop_process, wait_port
from vigie.probes.base import Check, Probe, ProbeContext
from vigie.probes.dicom import DicomProbe
from vigie.probes.dns import DnsProbe
from vigie.probes.hl7 import Hl7Probe
from vigie.probes.icmp import IcmpProbe
from vigie.probes.smtp import SmtpProbe

PLUGINS = "/usr/lib/nagios/plugins"
HL7_SCRIPT = """
import sys, hl7.client
msg = ("MSH|^~\\\\&|VIGIE|CHU|LAB|CHU|20260101||QRY^A19|CTRL1|P|2.3\\r"
       "QRD|20260101|R|I|Q1|||1^RD|VIGIE|DEM")
with hl7.client.MLLPClient("127.0.0.1", int(sys.argv[1])) as client:
    ack = client.send_message(msg)
sys.exit(0 if b"MSA|AA" in ack else 2)
"""
DICOM_SCRIPT = """
import sys
from pynetdicom import AE
ae = AE(ae_title="VIGIE")
ae.add_requested_context("1.2.840.10008.1.1")
assoc = ae.associate("127.0.0.1", int(sys.argv[1]), ae_title="PACS")
ok = assoc.is_established and assoc.send_c_echo().Status == 0
if assoc.is_established:
    assoc.release()
sys.exit(0 if ok else 2)
"""
SERVE_DICOM = """
import sys
from pynetdicom import AE
ae = AE(ae_title="PACS")
ae.add_supported_context("1.2.840.10008.1.1")
ae.start_server(("127.0.0.1", int(sys.argv[1])), block=True)
"""
SERVE_HL7 = """
import asyncio, sys
from vigie.lab.feed import MllpEngine
async def main():
    engine = MllpEngine()
    await engine.start(int(sys.argv[1]))
    await asyncio.Event().wait()
asyncio.run(main())
"""


@dataclass
class Row:
    """One protocol's figures: Vigie's CPU per check and the process-per-check side's."""

    protocol: str
    vigie_ms: float
    vigie_ok: int
    vigie_n: int
    other: str
    other_ms: float
    other_ok: int
    other_n: int

    def to_json(self) -> dict[str, Any]:
        """Return the row as JSON data."""
        return dict(self.__dict__)


@contextmanager
def _child(argv: list[str], port: int, udp: bool = False) -> Iterator[None]:
    """Run a peer in a child process until the block ends."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if udp:
            time.sleep(0.5)  # dnsmasq binds UDP and TCP together: TCP answering says UDP is up
        wait_port("127.0.0.1", port, 20)
        yield
    finally:
        stop_process(proc)


def _dnsmasq(port: int) -> list[str]:
    """dnsmasq answering dpi.chu.test on port."""
    argv = [
        "/usr/sbin/dnsmasq",
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--local=/chu.test/",
        "--host-record=dpi.chu.test,10.1.2.3",
    ]
    return [*argv, "--user=root"] if os.geteuid() == 0 else argv


def _check(probe: Probe[Any], target: str, **settings: Any) -> Check[Any]:
    """A check of probe on target with these settings."""
    parsed = probe.parse_target(target)
    return Check(
        id="bench",
        kind=probe.kind,
        target=parsed,
        interval=60.0,
        timeout=5.0,
        settings=probe.Settings.model_validate(settings),
        host=probe.host_of(parsed),
    )


async def _vigie(probe: Probe[Any], check: Check[Any], n: int) -> tuple[float, int]:
    """Run n checks in a row; return CPU ms per check and how many succeeded."""
    async with aiohttp.ClientSession() as session:
        ctx = ProbeContext(session=session)
        await probe(check, ctx)  # warm: imports, first connection
        ok = 0
        cpu = time.process_time()
        for _ in range(n):
            ok += (await probe(check, ctx)).success
        return (time.process_time() - cpu) / n * 1000, ok


def _processes(argv: list[str], n: int) -> tuple[float, int]:
    """Run argv n times in a row; return CPU ms per run (children and spawning) and successes."""
    subprocess.run(argv, capture_output=True, check=False, timeout=30)  # warm the page cache
    ok = 0
    before, own = children_cpu(), time.process_time()
    for _ in range(n):
        ok += subprocess.run(argv, capture_output=True, check=False, timeout=30).returncode == 0
    spent = (children_cpu() - before).total + (time.process_time() - own)
    return spent / n * 1000, ok


Measure = Callable[[int, int], Coroutine[Any, Any, Row]]


async def _hl7(n: int, m: int) -> Row:
    port = free_port()
    with _child([sys.executable, "-c", SERVE_HL7, str(port)], port):
        probe = Hl7Probe()
        ms, ok = await _vigie(probe, _check(probe, f"127.0.0.1:{port}"), n)
        other_ms, other_ok = _processes([sys.executable, "-c", HL7_SCRIPT, str(port)], m)
    return Row(
        "hl7 (MLLP, QRY^A19 and its ACK)", ms, ok, n, "python-hl7 script", other_ms, other_ok, m
    )


async def _dicom(n: int, m: int) -> Row:
    port = free_port()
    with _child([sys.executable, "-c", SERVE_DICOM, str(port)], port):
        probe = DicomProbe()
        check = _check(probe, f"127.0.0.1:{port}", called_ae_title="PACS")
        ms, ok = await _vigie(probe, check, n)
        other_ms, other_ok = _processes([sys.executable, "-c", DICOM_SCRIPT, str(port)], m)
    return Row("dicom (C-ECHO)", ms, ok, n, "pynetdicom script", other_ms, other_ok, m)


async def _dns(n: int, m: int) -> Row:
    port = free_port()
    with _child(_dnsmasq(port), port, udp=True):
        probe = DnsProbe()
        check = _check(probe, f"127.0.0.1:{port}", query_name="dpi.chu.test")
        ms, ok = await _vigie(probe, check, n)
        argv = [f"{PLUGINS}/check_dig", "-H", "127.0.0.1", "-p", str(port), "-l", "dpi.chu.test"]
        other_ms, other_ok = _processes([*argv, "-a", "10.1.2.3"], m)
    return Row("dns (A over UDP)", ms, ok, n, "check_dig", other_ms, other_ok, m)


async def _smtp(n: int, m: int) -> Row:
    port = free_port()
    with _child([sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}"], port):
        probe = SmtpProbe()
        ms, ok = await _vigie(probe, _check(probe, f"127.0.0.1:{port}", tls="none"), n)
        argv = [f"{PLUGINS}/check_smtp", "-H", "127.0.0.1", "-p", str(port)]
        other_ms, other_ok = _processes(argv, m)
    return Row("smtp (banner, EHLO, QUIT)", ms, ok, n, "check_smtp", other_ms, other_ok, m)


async def _icmp_here(n: int, m: int) -> Row:
    """Inside the namespace: both sides against 127.0.0.1, one echo each."""
    probe = IcmpProbe()
    ms, ok = await _vigie(probe, _check(probe, "127.0.0.1", count=1), n)
    argv = [f"{PLUGINS}/check_ping", "-H", "127.0.0.1", "-w", "100,20%", "-c", "200,50%", "-p", "1"]
    other_ms, other_ok = _processes(argv, m)
    return Row("icmp (one echo)", ms, ok, n, "check_ping", other_ms, other_ok, m)


async def _icmp(n: int, m: int) -> Row:
    """Run _icmp_here in a fresh network namespace that allows ICMP sockets."""
    script = (
        'ip link set lo up && echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range'
        ' && exec "$@"'
    )
    argv = [sys.executable, "-m", "tests.bench.protocols", "icmp-here", str(n), str(m)]
    proc = await asyncio.to_thread(
        subprocess.run,
        ["unshare", "--net", "--", "sh", "-c", script, "sh", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"icmp in a network namespace failed: {proc.stderr.strip()[-300:]}")
    return Row(**json.loads(proc.stdout.strip().splitlines()[-1]))


def _available() -> dict[str, tuple[Measure, str | None]]:
    """Each protocol's measure and what is missing to run it (None: runnable)."""

    def need(*paths: str) -> str | None:
        missing = [p for p in paths if shutil.which(p) is None and not os.path.exists(p)]
        return f"missing {', '.join(missing)} (tests/peers.sh)" if missing else None

    root = None if os.geteuid() == 0 else "needs root for a network namespace"
    return {
        "hl7": (_hl7, None),
        "dicom": (_dicom, None),
        "dns": (_dns, need("/usr/sbin/dnsmasq", f"{PLUGINS}/check_dig", "dig")),
        "icmp": (_icmp, root or need("unshare", "ip", f"{PLUGINS}/check_ping")),
        "smtp": (_smtp, need(f"{PLUGINS}/check_smtp")),
    }


def run(quick: bool) -> str:
    """Measure every protocol; return the Markdown section."""
    n, m = (100, 20) if quick else (1000, 100)
    rows: list[Row] = []
    skipped: list[str] = []
    load = os.getloadavg()[0]
    for name, (measure, missing) in _available().items():
        if missing is not None:
            skipped.append(f"{name}: {missing}")
            continue
        log(f"protocols: {name}")
        try:
            rows.append(asyncio.run(measure(n, m)))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            skipped.append(f"{name}: {exc}")
    return render(rows, skipped, n=n, m=m, load=load, after=os.getloadavg()[0])


def render(
    rows: list[Row], skipped: list[str], *, n: int, m: int, load: float, after: float
) -> str:
    """Return the section: a table of CPU per check, and how it was measured."""
    lines = [
        "## Protocol probes beside a process per check",
        "",
        f"CPU per check: Vigie's probe ({n} checks in a row in one process, its event loop"
        f" included) beside what a user would run otherwise ({m} processes in a row, their CPU"
        " and the spawning). Peers in child processes, not counted; all on loopback. Load"
        f" average {load:.1f} before, {after:.1f} after: other work shared the machine, so"
        " read the ratios, not the absolute times. Source: tests/bench/protocols.py.",
        "",
        "| protocol | Vigie (ms CPU/check) | ok | otherwise | its ms CPU/check | ok | ratio |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r.other_ms / r.vigie_ms if r.vigie_ms > 0 else float("inf")
        lines.append(
            f"| {r.protocol} | {r.vigie_ms:.2f} | {r.vigie_ok}/{r.vigie_n} | {r.other} |"
            f" {r.other_ms:.1f} | {r.other_ok}/{r.other_n} | {ratio:.0f}x |"
        )
    lines += [
        "",
        "The dicom peer is pynetdicom's SCP with its default limit of 10 associations: every"
        " Vigie check in a row must be accepted (its association released, no bare connect).",
    ]
    if skipped:
        lines += ["", "Not measured: " + "; ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["icmp-here"]:
        row = asyncio.run(_icmp_here(int(sys.argv[2]), int(sys.argv[3])))
        print(json.dumps(row.to_json()))
    else:
        print(run(quick="--quick" in sys.argv))
