"""The aiohttp application key under which the daemon is stored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from vigie.monitor.app import Daemon

DAEMON_KEY: web.AppKey[Daemon] = web.AppKey("daemon")
