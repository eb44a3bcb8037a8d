"""The one sanitiser: printable text kept, controls blanked, long text cut with an ellipsis."""

from __future__ import annotations

import pytest

from vigie.core.sanitise import LABEL_VALUE_CHARS, sanitise


def test_printable_text_within_the_bound_is_unchanged() -> None:
    """The common case is returned as is."""
    assert sanitise("UPS Nord 1 — salle B") == "UPS Nord 1 — salle B"


def test_controls_become_spaces_and_length_is_bounded() -> None:
    """CR, LF, ESC, NUL, DEL and C1 controls never reach a label or a log."""
    assert sanitise("a\r\nb\x1b\x00\x7f\x85c") == "a  b    c"
    cut = sanitise("y" * 10_000)
    assert len(cut) == LABEL_VALUE_CHARS and cut.endswith("…")
    assert sanitise("abcdef", limit=4) == "abc…"


def test_a_limit_below_one_is_refused() -> None:
    """A caller bug is named, not turned into an empty label."""
    with pytest.raises(ValueError, match="at least 1"):
        sanitise("abc\x00", limit=0)
