"""The one sanitiser for text a device or target sends: label values, info texts, errors.

Device text is untrusted. Raw C0 controls (CR, ESC, BEL, NUL...), DEL and the other
non-printable characters break the Prometheus text format for some parsers (prometheus_client
rejects a page with a raw CR in a label value), corrupt terminals and logs, and a 10 KB
sysDescr would bloat every scrape. Every probe path passes such text through `sanitise`.
"""

from __future__ import annotations

__all__ = ["LABEL_VALUE_CHARS", "sanitise"]

LABEL_VALUE_CHARS = 256
"""Default bound on a label value from a device: SNMP's DisplayString holds 255 characters."""

_ELLIPSIS = "…"


def sanitise(text: str, limit: int = LABEL_VALUE_CHARS) -> str:
    """Return text with non-printable characters (C0, DEL, C1...) as spaces, cut to limit.

    A cut text ends with an ellipsis and is exactly limit characters long. Printable text
    within the bound is returned as is (the common case, checked at C speed).
    """
    if len(text) <= limit and text.isprintable():
        return text
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    cut = len(text) > limit
    head = text[: limit - 1] if cut else text
    if not head.isprintable():
        head = "".join(c if c.isprintable() else " " for c in head)
    return head + _ELLIPSIS if cut else head
