"""The maintenance page: open windows with author, reason and times; operators end them early.

A viewer sees the windows; an operator also gets an "End now" button per window opened
through the API or learnt from a peer (a window from the config file ends by editing the
file). The button posts a form (browsers cannot send DELETE), which does what
`DELETE /api/v1/maintenance/{id}` does: end the window, resume pages at once, record who.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web

from vigie.monitor.health.maintenance import NotEndable, Window
from vigie.monitor.web import operators
from vigie.monitor.web.keys import SOURCE_KEY


@dataclass(frozen=True, slots=True)
class MaintenancePage:
    """The open windows (earliest end first) and the last finished ones."""

    now: float
    windows: tuple[Window, ...]
    finished: tuple[Window, ...]
    names: dict[str, str]
    """A target's name for people (component or site), by id."""


def end_window(request: web.Request, window_id: str) -> Window | None:
    """End an open window as the request's sender and record it; None when none is open.

    NotEndable for a window from the config file.
    """
    who = operators.principal(request).who
    win = request.app[SOURCE_KEY].end_maintenance(window_id, who)
    if win is not None:
        operators.record(request, "maintenance_end", win.target, f"{win.id}: {win.reason}")
    return win


async def page(request: web.Request) -> web.Response:
    """Serve the maintenance windows, with end buttons for operators."""
    from vigie.monitor.web.pages import page_response

    source = request.app[SOURCE_KEY]
    now = time.time()
    windows = sorted(source.maintenance_windows(), key=lambda w: (w.end, w.target))
    finished = source.finished_maintenance()[:20]
    topo = source.topology()
    names = {}
    for w in (*windows, *finished):
        spec = topo.components.get(w.target)
        names[w.target] = spec.name or w.target if spec is not None else topo.site_name(w.target)
    shown = MaintenancePage(now=now, windows=tuple(windows), finished=tuple(finished), names=names)
    return page_response(request, "maintenance.html", shown)


async def end_form(request: web.Request) -> web.Response:
    """The page's "End now" button: end the window, then back to the page."""
    try:
        win = end_window(request, request.match_info["id"])
    except NotEndable as exc:
        return web.Response(status=409, text=f"{exc}\n")
    if win is None:
        return web.Response(status=404, text="No open maintenance window with this id.\n")
    raise web.HTTPSeeOther("/maintenance")


def add_routes(app: web.Application) -> None:
    """Register the page and its form."""
    app.router.add_get("/maintenance", page)
    app.router.add_post("/maintenance/{id}/end", end_form)
