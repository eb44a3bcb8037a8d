"""The OpenAPI 3 document of the JSON API under /api/v1, written by hand (it is small)."""

from __future__ import annotations

import copy
from typing import Any

STATES = ["OK", "WARNING", "DEGRADED", "DOWN", "UNKNOWN", "IMPACTED", "FLAPPING"]

_TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC"}
_NULLABLE_TIME = {**_TIME, "nullable": True}
_STATE = {"type": "string", "enum": STATES}


def _obj(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


SCHEMAS: dict[str, Any] = {
    "Site": _obj(
        ["id", "name", "parent", "state"],
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "parent": {"type": "string", "nullable": True},
            "state": _STATE,
        },
    ),
    "Component": _obj(
        ["id", "kind", "site", "state", "since", "reasons", "root_causes", "maintenance"],
        {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "site": {"type": "string"},
            "state": _STATE,
            "since": _TIME,
            "reasons": {"type": "array", "items": {"type": "string"}},
            "root_causes": {"type": "array", "items": {"type": "string"}},
            "maintenance": {"type": "boolean"},
            "budget": {"$ref": "#/components/schemas/Budget"},
        },
    ),
    "Budget": {
        **_obj(
            [
                "seconds",
                "target",
                "over_target",
                "tier",
                "check",
                "via",
                "rule",
                "interval",
                "timeout",
                "for",
                "confirm",
                "group_wait",
            ],
            {
                "seconds": {
                    "type": "number",
                    "description": "worst case from a fault to the first notification: "
                    "interval + timeout + for + confirm + group_wait",
                },
                "target": {
                    "type": "number",
                    "nullable": True,
                    "description": "health.page_within of its tier (null: no tier)",
                },
                "over_target": {"type": "boolean"},
                "tier": {"type": "integer", "minimum": 1, "maximum": 4, "nullable": True},
                "check": {"type": "string", "description": "the check whose path is the worst"},
                "via": {
                    "type": "string",
                    "description": "the component that check feeds (itself or a dependency)",
                },
                "rule": {"type": "string", "description": "the rule whose `for` counts"},
                "interval": {"type": "number"},
                "timeout": {"type": "number"},
                "for": {"type": "number"},
                "confirm": {"type": "number", "description": "active confirmation, one timeout"},
                "group_wait": {"type": "number", "description": "alerting.group_wait"},
            },
        ),
        "nullable": True,
        "description": "detection budget in seconds; null when nothing can detect its failure",
    },
    "ImpactedApplication": _obj(
        ["id", "name", "criticality", "state", "degraded_mode", "runbook_url", "team"],
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "criticality": {"type": "integer", "minimum": 1, "maximum": 4},
            "state": _STATE,
            "degraded_mode": {"type": "string"},
            "runbook_url": {"type": "string"},
            "team": {"type": "string"},
        },
    ),
    "Incident": _obj(
        [
            "id",
            "key",
            "root_cause",
            "site",
            "severity",
            "started_at",
            "summary",
            "description",
            "site_wide",
            "maintenance",
            "confirmed",
            "impacted",
            "applications",
        ],
        {
            "id": {"type": "string", "description": "root cause @ start time"},
            "key": {"type": "string"},
            "root_cause": {"type": "string"},
            "site": {"type": "string"},
            "severity": {"type": "string", "enum": ["critical", "warning"]},
            "started_at": _TIME,
            "summary": {"type": "string"},
            "description": {"type": "string"},
            "site_wide": {"type": "boolean"},
            "maintenance": {"type": "boolean"},
            "confirmed": {
                "type": "boolean",
                "description": "false while paging waits for the dependencies' checks",
            },
            "impacted": {"type": "array", "items": {"type": "string"}},
            "applications": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ImpactedApplication"},
            },
        },
    ),
    "Check": _obj(
        ["id", "kind", "target", "labels", "interval", "success", "error", "at"],
        {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "target": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "interval": {"type": "number"},
            "success": {"type": "boolean", "nullable": True},
            "error": {"type": "string", "nullable": True},
            "at": _NULLABLE_TIME,
        },
    ),
    "MaintenanceWindow": _obj(
        ["id", "target", "start", "end", "reason", "source", "author", "silence", "ended_early"],
        {
            "id": {"type": "string", "description": "what DELETE takes; config-<n> for the file's"},
            "target": {"type": "string"},
            "start": _TIME,
            "end": _TIME,
            "reason": {"type": "string"},
            "source": {"type": "string", "enum": ["config", "api", "alertmanager"]},
            "author": {"type": "string", "description": "who opened it"},
            "silence": {
                "type": "string",
                "nullable": True,
                "description": "its Alertmanager silence (replicas)",
            },
            "ended_early": {
                **_obj(["at", "by"], {"at": _TIME, "by": {"type": "string"}}),
                "nullable": True,
            },
        },
    ),
    "MaintenanceRequest": {
        **_obj(
            ["target", "end"],
            {
                "target": {"type": "string", "description": "component or site id"},
                "start": {"type": "string", "format": "date-time", "description": "default now"},
                "end": {"type": "string", "format": "date-time", "description": "with timezone"},
                "reason": {"type": "string", "maxLength": 500},
            },
        ),
        "additionalProperties": False,
    },
    "ArchivedIncident": _obj(
        [
            "id",
            "key",
            "severity",
            "summary",
            "root_cause",
            "root_name",
            "site",
            "started_at",
            "closed_at",
            "duration_seconds",
            "applications",
            "impacted",
            "timeline",
            "paging",
        ],
        {
            "id": {"type": "string"},
            "key": {"type": "string"},
            "severity": {"type": "string", "enum": ["critical", "warning"]},
            "summary": {"type": "string"},
            "root_cause": {"type": "string"},
            "root_name": {"type": "string"},
            "site": {"type": "string"},
            "site_name": {"type": "string"},
            "site_wide": {"type": "boolean"},
            "maintenance": {"type": "boolean"},
            "started_at": _TIME,
            "closed_at": _TIME,
            "duration_seconds": {"type": "number"},
            "applications": {
                "type": "array",
                "items": _obj(
                    ["id", "name", "criticality"],
                    {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "criticality": {"type": "integer"},
                        "degraded_mode": {"type": "string"},
                        "team": {"type": "string"},
                    },
                ),
            },
            "impacted": {"type": "array", "items": {"type": "string"}},
            "timeline": {
                "type": "array",
                "items": _obj(
                    ["at", "component", "state"],
                    {
                        "at": _TIME,
                        "component": {"type": "string", "description": "'' for a site event"},
                        "name": {"type": "string"},
                        "was": {"type": "string", "nullable": True},
                        "state": _STATE,
                        "event": {"type": "string", "description": "mains_lost"},
                    },
                ),
            },
            "updates": {
                "type": "array",
                "description": "the crisis cell's posted updates, oldest first",
                "items": _obj(
                    ["at", "by", "text", "expected_recovery"],
                    {
                        "at": _TIME,
                        "by": {"type": "string"},
                        "text": {"type": "string"},
                        "expected_recovery": _NULLABLE_TIME,
                    },
                ),
            },
            "paging": {
                "type": "array",
                "description": "each team's escalation: who was paged, who acknowledged",
                "items": _obj(
                    ["team", "opened", "paged"],
                    {
                        "team": {"type": "string"},
                        "opened": _TIME,
                        "paged": {"type": "array", "items": {"type": "object"}},
                        "acknowledged_by": {"type": "string", "nullable": True},
                        "acknowledged_at": _NULLABLE_TIME,
                        "acknowledged_via": {"type": "string", "nullable": True},
                        "resolved_at": _NULLABLE_TIME,
                        "events": {"type": "array", "items": {"type": "object"}},
                    },
                ),
            },
        },
    ),
    "Availability": _obj(
        ["enabled", "since", "until", "applications", "tiers"],
        {
            "enabled": {"type": "boolean", "description": "false without a state_dir"},
            "since": _TIME,
            "until": _TIME,
            "applications": {
                "type": "array",
                "items": _obj(
                    ["id", "name", "criticality", "availability", "down_seconds"],
                    {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "criticality": {"type": "integer", "description": "5: no tier set"},
                        "availability": {
                            "type": "number",
                            "nullable": True,
                            "description": "share of observed time not failing (null: none)",
                        },
                        "down_seconds": {"type": "number"},
                        "maintenance_seconds": {"type": "number"},
                        "observed_seconds": {
                            "type": "number",
                            "description": "known and outside maintenance windows",
                        },
                    },
                ),
            },
            "tiers": {
                "type": "array",
                "items": _obj(
                    ["tier", "availability", "down_seconds"],
                    {
                        "tier": {"type": "integer"},
                        "availability": {"type": "number", "nullable": True},
                        "down_seconds": {"type": "number"},
                        "maintenance_seconds": {"type": "number"},
                        "observed_seconds": {"type": "number"},
                    },
                ),
            },
        },
    ),
    "Archive": _obj(
        ["enabled", "incidents", "truncated", "kept", "size_bytes", "retention_days"],
        {
            "enabled": {"type": "boolean", "description": "false without a state_dir"},
            "incidents": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ArchivedIncident"},
            },
            "truncated": {"type": "boolean", "description": "more matched than listed (500)"},
            "kept": {"type": "integer"},
            "size_bytes": {"type": "integer"},
            "retention_days": {"type": "number"},
        },
    ),
    "Recovery": _obj(
        [
            "id",
            "name",
            "criticality",
            "state",
            "back",
            "down_since",
            "back_at",
            "stable_for_seconds",
        ],
        {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "criticality": {"type": "integer", "description": "1 to 4; 5 when unset"},
            "state": _STATE,
            "back": {"type": "boolean"},
            "down_since": _NULLABLE_TIME,
            "back_at": _NULLABLE_TIME,
            "stable_for_seconds": {"type": "number", "nullable": True},
        },
    ),
    "Error": _obj(["error"], {"error": {"type": "string"}}),
    "AuditAction": _obj(
        ["at", "who", "role", "via", "remote", "action", "target", "detail", "expected_recovery"],
        {
            "at": _TIME,
            "who": {"type": "string", "description": "user, certificate subject or receiver"},
            "role": {"type": "string", "enum": ["operator", "viewer", "receiver"]},
            "via": {
                "type": "string",
                "description": "basic_auth, certificate, link, anonymous, or `replica <name>`"
                " (an update posted on a peer replica)",
            },
            "remote": {"type": "string", "description": "client address"},
            "action": {
                "type": "string",
                "enum": [
                    "maintenance",
                    "maintenance_end",
                    "reload",
                    "acknowledge",
                    "incident_update",
                ],
            },
            "target": {"type": "string"},
            "detail": {"type": "string"},
            "expected_recovery": _NULLABLE_TIME,
        },
    ),
    "IncidentUpdate": _obj(
        ["incident", "at", "by", "text", "expected_recovery"],
        {
            "incident": {"type": "string"},
            "at": _TIME,
            "by": {"type": "string"},
            "text": {"type": "string"},
            "expected_recovery": _NULLABLE_TIME,
        },
    ),
    "IncidentUpdateRequest": _obj(
        ["text"],
        {
            "text": {"type": "string", "maxLength": 500},
            "expected_recovery": {
                "type": "string",
                "nullable": True,
                "description": "HH:MM (today, or tomorrow if past, in the config's time zone)"
                " or ISO 8601",
            },
        },
    ),
}


def _list(schema: str, summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "array",
                                "items": {"$ref": f"#/components/schemas/{schema}"},
                            }
                        }
                    },
                }
            },
        }
    }


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def document() -> dict[str, Any]:
    """Return the OpenAPI 3.0 document of /api/v1 (a fresh dict: callers may change it)."""
    maintenance = _list("MaintenanceWindow", "List maintenance windows")
    maintenance["post"] = {
        "summary": "Open a maintenance window: pages are held for its target, states still change",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/MaintenanceRequest"}}
            },
        },
        "responses": {
            "201": {
                "description": "Created",
                "content": {
                    "application/json": {
                        "schema": {"$ref": "#/components/schemas/MaintenanceWindow"}
                    }
                },
            },
            "400": _error("Invalid body, or longer than web.maintenance_max"),
            "403": _error("Needs the operator role"),
            "404": _error("Unknown component or site"),
            "413": _error("Body too large"),
        },
    }
    window_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    end_window = {
        "delete": {
            "parameters": window_id,
            "summary": "End a maintenance window now (operator role): its pages resume at once",
            "responses": {
                "200": {
                    "description": "Ended",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/MaintenanceWindow"}
                        }
                    },
                },
                "403": _error("Needs the operator role"),
                "404": _error("No open window with this id"),
                "409": _error("A window from the config file (end it there)"),
            },
        }
    }
    updates = _list("IncidentUpdate", "List an incident's updates, newest first")
    incident_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    updates["get"]["parameters"] = incident_id
    updates["post"] = {
        "parameters": incident_id,
        "summary": "Post an update on an open incident (operator role): shown on the pages and"
        " sent to Alertmanager as annotations of its alert",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/IncidentUpdateRequest"}
                }
            },
        },
        "responses": {
            "201": {
                "description": "Posted",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/IncidentUpdate"}}
                },
            },
            "400": _error("Invalid body (no text, too long, bad time)"),
            "403": _error("Needs the operator role"),
            "404": _error("No open incident with this id"),
            "413": _error("Body too large"),
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Vigie API",
            "version": "1",
            "description": "Health of a hospital's infrastructure: sites, components, "
            "incidents (one per root cause), checks, maintenance windows, recovery.",
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/api/v1/sites": _list("Site", "List sites with their state"),
            "/api/v1/components": _list("Component", "List components with their state"),
            "/api/v1/incidents": _list("Incident", "List open incidents, most severe first"),
            "/api/v1/checks": _list("Check", "List checks with their last result"),
            "/api/v1/maintenance": maintenance,
            "/api/v1/maintenance/{id}": end_window,
            "/api/v1/recovery": _list(
                "Recovery", "List applications that failed, still down first, then back"
            ),
            "/api/v1/archive": {
                "get": {
                    "summary": "List closed incidents with their timeline, newest first",
                    "parameters": [
                        {
                            "name": name,
                            "in": "query",
                            "required": False,
                            "description": text,
                            "schema": {"type": "string"},
                        }
                        for name, text in (
                            ("from", "first day (YYYY-MM-DD, in the config's time zone)"),
                            ("to", "last day, included"),
                            ("application", "an application's id"),
                            ("id", "one incident's id"),
                        )
                    ],
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Archive"}
                                }
                            },
                        },
                        "400": _error("A date that is not YYYY-MM-DD"),
                    },
                }
            },
            "/api/v1/audit": _list(
                "AuditAction", "List operator actions, newest first (?limit=, default 500)"
            ),
            "/api/v1/incidents/{id}/updates": updates,
            "/api/v1/availability": {
                "get": {
                    "summary": "Availability per application and tier, maintenance left out",
                    "parameters": [
                        {
                            "name": name,
                            "in": "query",
                            "required": False,
                            "description": text,
                            "schema": {"type": "string"},
                        }
                        for name, text in (
                            ("range", "day, week (default) or month, ending now"),
                            ("from", "first day (YYYY-MM-DD, in the config's time zone)"),
                            ("to", "last day, included"),
                        )
                    ],
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Availability"}
                                }
                            },
                        },
                        "400": _error("A date that is not YYYY-MM-DD"),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {"schemas": copy.deepcopy(SCHEMAS)},
    }
