"""Regenerate docs/status-page.png: the demo hospital's overview during the power-cut scenario.

Run with `make screenshot` (or `python -m tests.web.screenshot [OUT.png]`): it starts the demo
(lab/ and the daemon on config/demo.yaml), plays `power-cut` time-compressed until Nord's
applications are down, and has headless chromium photograph the overview at 1280x900, as the
crisis cell reads it: in French (the demo's web.language, the browser asking for French too).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from tests.web.outage import chromium, chromium_binary
from vigie.monitor.demo import running_demo
from vigie.monitor.health.states import State

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"
SPEED = 40.0
"""Scenario speed: the batteries run out within about 20 s."""


async def screenshot(out: Path, path: str = "/", size: str = "1280,900") -> None:
    """Play power-cut in the demo until applications are impacted, then photograph a page."""
    binary = chromium_binary()
    if binary is None:
        raise SystemExit("chromium missing: apt-get install chromium")
    async with running_demo("127.0.0.1:0") as demo:
        await asyncio.wait_for(demo.daemon.scheduler.first_round_done.wait(), 60)
        demo.controller.start("power-cut", SPEED)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            comps = demo.daemon.health.engine.snapshot.components.values()
            hit = [c for c in comps if c.kind == "application" and c.state is State.IMPACTED]
            if len(hit) >= 3:
                break
            await asyncio.sleep(0.5)
        else:
            raise SystemExit("the power cut never reached the applications")
        await chromium(
            binary,
            "--accept-lang=fr-FR,fr",
            f"--screenshot={out}",
            f"--window-size={size}",
            demo.url + path,
        )


def check_written(out: Path) -> None:
    """Fail when chromium left no PNG behind."""
    if not out.exists() or out.stat().st_size == 0:
        raise SystemExit(f"chromium wrote no screenshot to {out}")


def main(argv: list[str]) -> int:
    """Write the screenshot to argv[0] (default docs/status-page.png)."""
    out = Path(argv[0]).resolve() if argv else DEFAULT_OUT
    asyncio.run(screenshot(out))
    check_written(out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
