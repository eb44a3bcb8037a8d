"""Regenerate docs/status-page*.png: the demo hospital's pages during and after the power cut.

Run with `make screenshot` (or `python -m tests.web.screenshot [OUT.png]`): it starts the demo
(lab/ and the daemon on config/demo.yaml) and has headless chromium photograph, as the crisis
cell reads them, in French (the demo's web.language, the browser asking for French too):

- OUT (docs/status-page.png): the overview, the power-cut scenario played time-compressed until
  Nord's applications are down, with an update the cell posted and the on-call's
  acknowledgement (the link of the SMS the demo's gateway received);
- OUT-incident.png: the incident's page with that update;
- OUT-recovery.png: the recovery board while the recovery scenario brings Nord back (some
  applications back, others still down or flapping);
- OUT-report.png: the incident's post-incident report once it closed (or as it stands, if the
  flapping application keeps it open);
- OUT-availability.png: the availability page after the outage.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp

from tests.web.outage import chromium, chromium_binary
from vigie.monitor.demo import Demo, running_demo
from vigie.monitor.health.states import State
from vigie.monitor.i18n import zone_of

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"
SPEED = 40.0
"""Scenario speed: the batteries run out within about 20 s."""
UPDATE = "La DSI rétablit le courant : groupe électrogène en route, puis redémarrage des serveurs"
SIZE = "1280,900"
ACK_LINK = re.compile(r"ACK (http://\S+)")
"""The acknowledgement link of a page the demo's SMS gateway received."""
MAX_BYTES = 300_000
"""A picture larger than this is written again with fewer colours (ImageMagick, if present)."""


def apps(demo: Demo) -> dict[str, State]:
    """Each application's state now."""
    comps = demo.daemon.health.engine.snapshot.components.values()
    return {c.id: c.state for c in comps if c.kind == "application"}


async def until(condition: Callable[[], bool], what: str, within: float = 120) -> bool:
    """Poll condition until true; False (said on stderr) when it did not happen within."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.5)
    print(f"screenshot: {what} did not happen within {within:g} s", file=sys.stderr)
    return False


async def shoot(binary: str, url: str, out: Path, size: str = SIZE) -> None:
    """Photograph a page in French; fail when chromium left no PNG behind."""
    await chromium(
        binary,
        "--lang=fr-FR",  # the browser's own words (a date field's jj/mm/aaaa) in French too
        "--accept-lang=fr-FR,fr",
        f"--screenshot={out}",
        f"--window-size={size}",
        url,
    )
    if check_written(out) > MAX_BYTES:
        await shrink(out)
    print(out, check_written(out))


async def shrink(out: Path) -> None:
    """Write a big PNG again with 256 colours (ImageMagick's convert), when it is installed."""
    proc = await asyncio.create_subprocess_exec(
        "convert", str(out), "-colors", "256", "-define", "png:compression-level=9", str(out)
    )
    await proc.wait()


async def post_update(demo: Demo, incident: str) -> None:
    """Post the crisis cell's update on the incident, recovery expected in about 3 hours."""
    zone = zone_of(demo.daemon.loaded.config.timezone)
    expected = (datetime.now(zone) + timedelta(hours=3)).strftime("%H:00")
    url = f"{demo.url}/api/v1/incidents/{quote(incident, safe='')}/updates"
    body = {"text": UPDATE, "expected_recovery": expected}
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        if response.status != 201:
            raise SystemExit(f"the update was refused: {response.status} {await response.text()}")


async def acknowledge(demo: Demo) -> None:
    """Acknowledge the page as the on-call would, by the link of the first SMS (if one came)."""
    gateway = demo.sms

    def link() -> str | None:
        texts = [] if gateway is None else [sms.text for sms in gateway.received]
        found = [m.group(1) for m in map(ACK_LINK.search, texts) if m is not None]
        return found[0] if found else None

    if await until(lambda: link() is not None, "the on-call's SMS", within=60):
        async with aiohttp.ClientSession() as session, session.post(link() or "") as response:
            if response.status != 200:
                print(
                    f"screenshot: the acknowledgement answered {response.status}", file=sys.stderr
                )


async def screenshots(out: Path) -> list[Path]:
    """Play the power cut and the recovery in the demo; photograph the pages; return them."""
    binary = chromium_binary()
    if binary is None:
        raise SystemExit("chromium missing: apt-get install chromium")
    named = {n: out.with_name(f"{out.stem}-{n}.png") for n in ("incident", "recovery", "report")}
    named["availability"] = out.with_name(f"{out.stem}-availability.png")
    async with running_demo("127.0.0.1:0") as demo:
        await asyncio.wait_for(demo.daemon.scheduler.first_round_done.wait(), 60)
        demo.controller.start("power-cut", SPEED)

        def cut() -> bool:
            hit = [s for s in apps(demo).values() if s is State.IMPACTED]
            return len(hit) >= 3 and bool(demo.daemon.health.engine.snapshot.incidents)

        if not await until(cut, "the power cut reaching the applications"):
            raise SystemExit("the power cut never reached the applications")
        snap = demo.daemon.health.engine.snapshot
        incident = next(i for i in snap.incidents.values() if i.site_wide).id
        failed = {a for a, s in apps(demo).items() if s.failing}
        await post_update(demo, incident)
        await acknowledge(demo)
        await shoot(binary, demo.url + "/", out)
        await shoot(binary, f"{demo.url}/incident/{quote(incident, safe='')}", named["incident"])

        demo.controller.start("recovery", SPEED)

        def half_back() -> bool:
            now = apps(demo)
            failed.update(a for a, state in now.items() if state.failing)
            back = [a for a in failed if now[a] is State.OK]
            return len(back) >= 2 and len(back) < len(failed)

        await until(half_back, "some applications back, others not")
        await shoot(binary, demo.url + "/recovery", named["recovery"])
        await until(lambda: demo.controller.task is None or demo.controller.task.done(), "recovery")
        demo.lab.set_service("rdv")  # the flapping application steadies: the incident can close

        def closed() -> bool:
            return incident not in {
                i.id for i in demo.daemon.health.engine.snapshot.incidents.values()
            }

        await until(closed, "the incident's close", within=180)
        report = f"{demo.url}/incident/{quote(incident, safe='')}/report"
        await shoot(binary, report, named["report"], "1280,1400")
        await shoot(binary, demo.url + "/availability", named["availability"])
    return [out, *named.values()]


def check_written(out: Path) -> int:
    """Return the PNG's size; fail when chromium left none behind."""
    size = out.stat().st_size if out.exists() else 0
    if size == 0:
        raise SystemExit(f"chromium wrote no screenshot to {out}")
    return size


def main(argv: list[str]) -> int:
    """Write the overview to argv[0] (default docs/status-page.png), the others beside it."""
    out = Path(argv[0]).resolve() if argv else DEFAULT_OUT
    asyncio.run(screenshots(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
