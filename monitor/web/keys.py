"""The aiohttp application key under which the web finds its read model."""

from __future__ import annotations

from aiohttp import web

from vigie.monitor.web.readmodel import StatusSource

SOURCE_KEY: web.AppKey[StatusSource] = web.AppKey("source")
