"""Shared helpers of the benchmarks: ports, /proc readings, child processes, target servers."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "bench" / "out"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX = "/usr/sbin/nginx"
TARGET_PATH = "/ok.txt"
TARGET_BODY = b"status: OK\n"


def log(message: str) -> None:
    """Print a progress line to stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard limit (children inherit it); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port free on host now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(host: str, port: int, timeout: float) -> None:
    """Wait until host:port accepts connections; raise TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout:g}s")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """User and system CPU seconds of a process (all its threads)."""

    user: float
    sys: float

    @property
    def total(self) -> float:
        """Return user + system seconds."""
        return self.user + self.sys

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.sys - other.sys)


def proc_cpu(pid: int) -> CpuTimes:
    """Return utime and stime of a live process from /proc/<pid>/stat (clock-tick resolution)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return CpuTimes(int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)


def children_cpu() -> CpuTimes:
    """Return the CPU times of this process's waited-for children (RUSAGE_CHILDREN)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuTimes(usage.ru_utime, usage.ru_stime)


def proc_memory(pid: int) -> dict[str, int]:
    """Return VmRSS and VmHWM of a process in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


DAEMON_COMMANDS = frozenset({"run", "worker"})
"""The `vigie` subcommands that keep running and take CPU beside a benchmark."""


def stray_daemons(proc_root: Path = Path("/proc")) -> list[str]:
    """Return `vigie run` and `vigie worker` processes already running (pid and command).

    One left by an earlier, interrupted run shares the CPU with every figure measured after
    it; the bench refuses to start beside one rather than report its noise as Vigie's cost.
    """
    found = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        for i, arg in enumerate(args[:-1]):
            is_vigie = arg in ("vigie.monitor.cli", "vigie") or arg.endswith("/vigie")
            if is_vigie and args[i + 1] in DAEMON_COMMANDS:
                found.append(f"pid {entry.name}: {' '.join(args)[:200]}")
                break
    return sorted(found)


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stop a child we started: SIGTERM, then SIGKILL after grace seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


@dataclass
class TargetServer:
    """Loopback HTTP target(s): nginx-light serving a small static file, or an aiohttp fallback."""

    listens: list[tuple[str, int]]
    kind: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    pids: list[int] = field(default_factory=list)

    def url(self, index: int = 0) -> str:
        """Return the URL of the static file on the index-th listen address."""
        host, port = self.listens[index]
        return f"http://{host}:{port}{TARGET_PATH}"

    def stop(self) -> None:
        """Stop the server and remove its work directory."""
        stop_process(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _nginx_conf(workdir: Path, listens: Sequence[tuple[str, int]], workers: int) -> str:
    """Return an nginx.conf serving workdir/www on every listen address, no logs."""
    listen_lines = "\n".join(f"    listen {h}:{p} backlog=4096;" for h, p in listens)
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes {workers};
daemon off;
master_process on;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  default_type text/plain;
  server {{
{listen_lines}
    root {workdir}/www;
    location / {{ }}
  }}
}}
"""


def start_target(listens: Sequence[tuple[str, int]], workers: int = 1) -> TargetServer:
    """Start nginx (when installed) or the aiohttp fallback on the given addresses."""
    workdir = Path(tempfile.mkdtemp(prefix="vigie-bench-target-"))
    workdir.chmod(0o755)
    www = workdir / "www"
    www.mkdir(mode=0o755)
    (www / TARGET_PATH.lstrip("/")).write_bytes(TARGET_BODY)
    (www / TARGET_PATH.lstrip("/")).chmod(0o644)
    if os.path.exists(NGINX):
        conf = workdir / "nginx.conf"
        conf.write_text(_nginx_conf(workdir, listens, workers))
        cmd = [NGINX, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]
        version = subprocess.run(
            [NGINX, "-v"], capture_output=True, text=True, check=False
        ).stderr.strip()
        kind = f"{version.removeprefix('nginx version: ')} ({workers} worker(s)), static file"
    else:
        args = [a for h, p in listens for a in ("--listen", f"{h}:{p}")]
        cmd = [sys.executable, "-m", "tests.bench.target", *args]
        kind = "aiohttp fallback server (install nginx-light for the reference target)"
    stderr = workdir / "stderr.log"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        for host, port in listens:
            wait_port(host, port, 15)
    except TimeoutError:
        stop_process(proc, 5)
        text = stderr.read_text(errors="replace")
        errlog = workdir / "error.log"
        if errlog.exists():
            text += errlog.read_text(errors="replace")
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"target server did not start: {text}") from None
    return TargetServer(list(listens), kind, proc, workdir, [proc.pid])


@contextlib.contextmanager
def target_server(listens: Sequence[tuple[str, int]], workers: int = 1) -> Iterator[TargetServer]:
    """Run a target server for the duration of a with block."""
    server = start_target(listens, workers)
    try:
        yield server
    finally:
        server.stop()
