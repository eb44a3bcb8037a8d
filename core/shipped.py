"""Where the files Vigie ships (device profiles, the demo config) are: a checkout or an install."""

from __future__ import annotations

import sys
from pathlib import Path

CHECKOUT_CONFIG = Path(__file__).resolve().parents[1] / "config"
"""config/ of a source checkout (also what an editable install uses)."""


def shipped(relative: str, prefix: Path | None = None) -> Path:
    """Return config/<relative> of the checkout, else the copy pip installed in share/vigie."""
    in_checkout = CHECKOUT_CONFIG / relative
    if in_checkout.exists():
        return in_checkout
    return (prefix or Path(sys.prefix)) / "share" / "vigie" / relative
