"""Property test: on generated hospitals of 502 components, one page per root cause.

Each seed replays one fault (a datacenter's or a room's power cut, a SAN failure, a switch
failure or a server crash, then its repair) with random poll phases, per-check intervals and
failures arriving in random order, at the engine level on a fake clock (tests/health/sim.py).
Every seed must give exactly one page per root cause, none for absorbed or impacted components,
a resolve for every page, and no page from a result older than the last change of what its
component depends on. The bench replays
hundreds of seeds with every fault each (`make bench`: tests/bench/health.py).
"""

from __future__ import annotations

import pytest

from tests.health.sim import replay

KINDS = ("power", "san", "switch", "crash", "room-power")
SEEDS = range(20)


@pytest.mark.parametrize("seed", SEEDS)
def test_one_page_per_root_cause(seed: int) -> None:
    """A fault on a generated hospital pages its root cause once, resolves it, nothing else."""
    outcome = replay(seed, [KINDS[seed % len(KINDS)]], first_only=True)
    assert outcome.components >= 500
    assert outcome.faults, f"seed {seed}: no fault played"
    assert not outcome.problems, (
        f"seed {seed} (replay: tests.health.sim.replay({seed}, [{KINDS[seed % len(KINDS)]!r}]))\n"
        + "\n".join(outcome.problems)
    )


def test_spent_budget_falls_back_to_the_schedule_and_loses_nothing() -> None:
    """With an on-demand budget of 2 runs a second, a SAN failure spends it: the refused runs
    are counted and the scheduled runs decide instead, with the same one page."""
    outcome = replay(3, ["san"], first_only=True, ondemand_rate=2.0)
    assert outcome.refused > 0, "the budget was not spent: the test proves nothing"
    assert outcome.ondemand > 0
    assert not outcome.problems, "\n".join(outcome.problems)
