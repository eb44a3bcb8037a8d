"""The `bus:` config section: where the NATS cluster is and how workers share the checks."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vigie.core.durations import Duration
from vigie.core.secrets import ConfigPath

SUBJECT_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}$")
BUCKET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
WORKER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A worker's name: its key in the bucket and a label value, so no dots and no spaces."""

_SCHEMES = frozenset({"nats", "tls", "ws", "wss"})


def _server_url(value: str) -> str:
    """Check a NATS server URL: nats://, tls://, ws:// or wss:// with a host, no credentials."""
    parts = urlsplit(value)
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ValueError(
            f"must be a nats://, tls://, ws:// or wss:// URL with a host, got {value!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not allowed: use credentials_file")
    return value


class BusSettings(BaseModel):
    """Probe workers on NATS: workers run the checks, `vigie run` takes their results."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: list[str] = Field(
        min_length=1,
        description="NATS server URLs of one cluster (nats://host:4222, tls://...); "
        "no credentials in them.",
    )
    subject_prefix: str = Field(
        "vigie",
        description="Results go to `<prefix>.results.<check id>`; one prefix per Vigie "
        "deployment sharing the cluster.",
    )
    kv_bucket: str = Field(
        "vigie_workers",
        description="JetStream key-value bucket where each worker keeps its key alive "
        "(created with worker_ttl as its max age if missing).",
    )
    worker_ttl: Duration = Field(
        10.0,
        ge=0.5,
        description="A worker whose key was not refreshed for this long is lost: its checks go "
        "to the others. At most 3/4 of the shortest check interval, its checks are run again "
        "within two intervals.",
    )
    credentials_file: ConfigPath | None = Field(
        None, description="NATS credentials file (.creds: user JWT and NKey seed), if any."
    )
    max_result_bytes: int = Field(
        262144,
        ge=4096,
        le=8 * 1024 * 1024,
        description="Largest encoded result: a worker drops the samples of a larger one, "
        "`vigie run` drops larger messages unread.",
    )

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str]) -> list[str]:
        return [_server_url(url) for url in value]

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not SUBJECT_PREFIX.match(value):
            raise ValueError(
                f"must be NATS subject tokens of letters, digits, _ or -, got {value!r}"
            )
        return value

    @field_validator("kv_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not BUCKET.match(value):
            raise ValueError(f"must be letters, digits, _ or -, got {value!r}")
        return value

    @property
    def results_subject(self) -> str:
        """The subject every result is published under (one token per check follows)."""
        return f"{self.subject_prefix}.results"

    def public_servers(self) -> list[str]:
        """Return the server URLs as logs and pages may show them (scheme, host and port)."""
        out = []
        for url in self.servers:
            parts = urlsplit(url)
            port = f":{parts.port}" if parts.port else ""
            out.append(f"{parts.scheme}://{parts.hostname}{port}")
        return out
