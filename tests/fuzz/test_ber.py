"""Fuzz regression of the BER codec of probes/snmp.py: kept inputs, then a short random run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.targets import corpus, given_test, replay

TARGET = "ber"


@pytest.mark.parametrize("seed", corpus(TARGET), ids=lambda p: p.name)
def test_seed_is_handled(seed: Path) -> None:
    """Every kept input (seeds, past crashes) is parsed or refused with the documented error."""
    replay(TARGET, seed)


def test_random_input_is_handled() -> None:
    """A short Hypothesis run (make fuzz runs the long one under atheris) finds no crash."""
    given_test(TARGET, 100)()
