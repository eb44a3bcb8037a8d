"""Regenerate docs/status-page.png: the overview during a simulated Datacenter Nord power cut.

Run with `make screenshot` (or `python -m tests.web.screenshot [OUT.png]`): it starts the test
hospital's services on loopback, a real Vigie daemon watching them, cuts Nord's power, and
has headless chromium photograph the overview at 1280x900.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from tests.web.outage import chromium, chromium_binary, power_cut, running_hospital

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "status-page.png"


async def screenshot(out: Path, path: str = "/", size: str = "1280,900") -> None:
    """Render a page of a daemon during the power cut to a PNG file."""
    binary = chromium_binary()
    if binary is None:
        raise SystemExit("chromium missing: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="vigie-shot-") as tmp:
        async with running_hospital(Path(tmp)) as (daemon, targets):
            await power_cut(daemon, targets)
            url = f"http://127.0.0.1:{daemon.listen_port}{path}"
            await chromium(binary, f"--screenshot={out}", f"--window-size={size}", url)


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
