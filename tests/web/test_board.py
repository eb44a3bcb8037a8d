"""The recovery board's wording fixes: criticality order in each group, the outage's start for a
flapping application, the degraded-mode text kept while an application is still down; and its
pictures: the restoration curve and a bar per application.

Built from a hand-written read model (tests/web/test_readmodel.py's Hospital) whose state
history is fed crafted snapshots: no daemon, no clock.
"""

from __future__ import annotations

import re
from datetime import UTC

from tests.web.test_readmodel import Hospital
from tests.web.test_svg import NS, parse, texts
from vigie.monitor.health.history import StateHistory, Transition
from vigie.monitor.health.model import Topology
from vigie.monitor.health.snapshot import ComponentStatus, Snapshot
from vigie.monitor.health.states import State
from vigie.monitor.health.topology import ComponentSpec, SiteSpec
from vigie.monitor.i18n import Speech
from vigie.monitor.web.pages import Pages, outage_start, recovery_board, recovery_rows
from vigie.monitor.web.readmodel import TopologyView
from vigie.monitor.web.views import RecoveryBoard

T0 = 1_767_000_000.0
APPS = {
    # id: (name, tier, degraded mode)
    "app-lab": ("Laboratoire", 2, "Résultats par téléphone, poste 4410"),
    "app-dpi": ("Dossier patient", 1, "Procédure DP-12: dossiers papier"),
    "app-mail": ("Messagerie", 3, ""),
    "app-pacs": ("Imagerie", 1, ""),
}


def _snapshot(at: float, states: dict[str, State]) -> Snapshot:
    comps = {
        cid: ComponentStatus(cid, "application", "nord", state, state, at, (), (cid,))
        for cid, state in states.items()
    }
    return Snapshot(at, comps, {}, {"nord": State.OK})


class Board(Hospital):
    """Four applications: two still down (one flapping since T0+60), two back."""

    def __init__(self) -> None:
        super().__init__()
        self._board_topology = Topology(
            [SiteSpec(id="nord", name="Datacenter Nord")],
            [
                ComponentSpec(
                    id=cid,
                    kind="application",
                    site="nord",
                    name=name,
                    criticality=tier,
                    degraded_mode=mode,
                )
                for cid, (name, tier, mode) in APPS.items()
            ],
        )
        ok = dict.fromkeys(APPS, State.OK)
        down = dict.fromkeys(APPS, State.DOWN)
        steps = [
            (T0, ok),
            (T0 + 60, down),
            (T0 + 120, {**down, "app-lab": State.OK}),  # a flap: back for 30 s
            (T0 + 150, down),
            (T0 + 600, {**down, "app-pacs": State.OK}),  # tier 1 back first
            (T0 + 900, {**down, "app-pacs": State.OK, "app-mail": State.OK}),  # tier 3 later
            (
                T0 + 960,
                {**down, "app-pacs": State.OK, "app-mail": State.OK, "app-lab": State.FLAPPING},
            ),
        ]
        self.history = StateHistory()
        for at, states in steps:
            self.history.observe(_snapshot(at, states))
        self._snapshot = _snapshot(*steps[-1])

    def topology(self) -> TopologyView:
        """The four applications."""
        return self._board_topology


def test_each_group_is_in_criticality_order() -> None:
    """Still down: tier 1 before tier 2; back: tier 1 before tier 3, though tier 3 is back later."""
    rows = recovery_rows(Board(), T0 + 1000)
    assert [(r.id, r.back) for r in rows] == [
        ("app-dpi", False),
        ("app-lab", False),
        ("app-pacs", True),
        ("app-mail", True),
    ]


def test_a_flapping_application_is_down_since_the_outage_began() -> None:
    """The lab flapped back for 30 s at T0+120: it is down since T0+60, not since T0+150."""
    rows = {r.id: r for r in recovery_rows(Board(), T0 + 1000)}
    assert rows["app-lab"].state == "FLAPPING"
    assert rows["app-lab"].down_since == T0 + 60
    assert rows["app-dpi"].down_since == T0 + 60


def test_outage_start_splits_outages_apart_by_a_long_ok_spell() -> None:
    """An OK spell of 10 minutes or more ends an outage; a shorter one is a flap of it."""
    history = [
        Transition(T0, State.DOWN),
        Transition(T0 + 100, State.OK),
        Transition(T0 + 100 + 599, State.DOWN),
        Transition(T0 + 2000, State.OK),
        Transition(T0 + 4000, State.DOWN),
    ]
    assert outage_start(history, T0 + 699) == T0
    assert outage_start(history, T0 + 4000) == T0 + 4000
    assert outage_start(history, None) is None
    assert outage_start([], T0 + 5) == T0 + 5


def test_still_down_applications_keep_their_degraded_mode_on_the_board() -> None:
    """The board says what to do meanwhile for what is still down, in French too."""
    board = recovery_board(Board())
    html = Pages.create().render("recovery.html", board, Speech("fr", UTC))
    assert "Procédure DP-12: dossiers papier" in html
    assert "Résultats par téléphone, poste 4410" in html
    assert "encore en panne" in html and "INSTABLE" in html and "RÉTABLI" in html
    assert "Tableau de reprise : 2 rétablies, 2 en panne" in html


def test_the_board_draws_the_restoration_curve_and_a_bar_per_application() -> None:
    """Two of four back on the curve (in French); one bar per row, in the board's order."""
    board = recovery_board(Board())
    html = Pages.create().render("recovery.html", board, Speech("fr", UTC))
    pictures = re.findall(r"(?s)<svg .*?</svg>", html)
    assert len(pictures) == 2
    curve, bars = (parse(p) for p in pictures)
    assert (curve.findtext(f"{NS}title") or "").startswith("2 applications rétablies sur 4 à")
    assert "Toutes les applications (2/4)" in texts(curve)  # back, of those that fell
    rows = [g.findtext(f"{NS}text") for g in bars.iter(f"{NS}g")]
    assert rows == [r.name for r in board.rows]
    empty = RecoveryBoard(now=T0, rows=(), down=0, back=0)  # nothing failed: no picture
    assert "<svg" not in Pages.create().render("recovery.html", empty, Speech("fr", UTC))
