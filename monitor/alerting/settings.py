"""The `alerting:` block of the config: Alertmanagers, webhooks, SMTP, retry and watchdog."""

from __future__ import annotations

import socket
import ssl
from email.utils import parseaddr
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from yarl import URL

from vigie.core.durations import Duration
from vigie.core.secrets import ConfigPath, resolve_secret_field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def http_url(value: str) -> str:
    """Check an http(s) URL with a host and no credentials (they would show up in logs)."""
    try:
        url = URL(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid URL {value!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {value!r}")
    if url.user is not None or url.password is not None:
        raise ValueError("credentials in the URL are not allowed: use bearer_token_file")
    return value


def origin(value: str) -> str:
    """Return scheme://host:port of a URL: what errors and logs may show of it."""
    url = URL(value)
    return str(url.origin())


def _mailbox(value: str) -> str:
    _, address = parseaddr(value)
    if "@" not in address:
        raise ValueError(f"not an e-mail address: {value!r}")
    return value


class WebhookSettings(_Strict):
    """A receiver of Alertmanager's webhook JSON (version 4), called on each state change."""

    url: str = Field(description="URL to POST to; only its scheme, host and port are logged.")
    name: str | None = Field(
        None, description="Name in metrics and logs; default host:port of the URL."
    )
    bearer_token: SecretStr | None = Field(
        None, description="Sent as `Authorization: Bearer` (prefer bearer_token_file)."
    )
    bearer_token_file: ConfigPath | None = Field(
        None, description="File holding the bearer token, read once at load."
    )
    timeout: Duration = Field(10.0, description="Time a POST may take.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return http_url(value)

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        """Read the bearer token from its file."""
        resolve_secret_field(self, "bearer_token")
        return self

    @property
    def sink_name(self) -> str:
        """The sink's name: `webhook:<name or host:port>`."""
        url = URL(self.url)
        return f"webhook:{self.name or f'{url.host}:{url.port}'}"


class SmtpSettings(_Strict):
    """Mail on each state change, sent straight to a mail relay: a path that avoids Alertmanager."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: str = Field(description="Mail relay host name or address.")
    port: int = Field(587, ge=1, le=65535, description="Mail relay port (587: submission).")
    starttls: bool = Field(True, description="Require STARTTLS before AUTH and mail.")
    ca_file: ConfigPath | None = Field(
        None, description="PEM CA bundle to verify the relay with; default: the system's."
    )
    username: str | None = Field(None, description="AUTH user name; AUTH is skipped if unset.")
    password: SecretStr | None = Field(None, description="AUTH password (prefer password_file).")
    password_file: ConfigPath | None = Field(
        None, description="File holding the AUTH password, read once at load."
    )
    from_: str = Field(alias="from", description="Sender address (From and envelope).")
    to: list[str] = Field(min_length=1, description="Recipient addresses.")
    timeout: Duration = Field(10.0, description="Time connecting and each SMTP command may take.")

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _mailbox(value)

    @field_validator("to")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        return [_mailbox(v) for v in value]

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        """Read the password from its file; a user name and a password go together."""
        resolve_secret_field(self, "password")
        if (self.username is None) != (self.password is None):
            raise ValueError("set both username and password (or password_file), or neither")
        if self.username is not None and not self.starttls:
            raise ValueError("AUTH without STARTTLS would send the password in clear")
        if self.ca_file is not None:
            try:
                ssl.create_default_context(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot use ca_file {str(self.ca_file)!r}: {exc}") from None
        return self

    @property
    def sink_name(self) -> str:
        """The sink's name: `smtp:<host>:<port>`."""
        return f"smtp:{self.host}:{self.port}"


def _default_instance() -> str:
    return socket.gethostname()


class AlertingSettings(_Strict):
    """Where alerts go and how hard Vigie tries to get them there."""

    alertmanagers: list[str] = Field(
        default_factory=list,
        description="Base URLs of the Alertmanagers of one cluster; each gets every alert.",
    )
    resend_interval: Duration = Field(
        60.0,
        description="Firing alerts are re-sent this often with endsAt = now + 4 x this.",
    )
    timeout: Duration = Field(10.0, description="Time a POST to an Alertmanager may take.")
    webhooks: list[WebhookSettings] = Field(
        default_factory=list, description="Receivers of Alertmanager's webhook JSON."
    )
    smtp: SmtpSettings | None = Field(None, description="Mail on each state change.")
    backoff_initial: Duration = Field(1.0, description="First retry delay bound after a failure.")
    backoff_max: Duration = Field(60.0, description="Largest retry delay bound.")
    flush_timeout: Duration = Field(5.0, description="On stop, time left to deliver what is due.")
    vigie_instance: str = Field(
        default_factory=_default_instance,
        min_length=1,
        description="Value of the vigie_instance label on every alert; default: host name.",
    )
    external_url: str | None = Field(
        None, description="URL of this Vigie, as externalURL in webhook payloads."
    )
    watchdog: bool = Field(True, description="Keep the VigieWatchdog alert always firing.")
    group_wait: Duration | Literal[0] = Field(
        10.0,
        description="The Alertmanager route's group_wait, mirrored here (Vigie does not apply it):"
        " the detection budget counts it before the first notification; 0 for webhooks/SMTP only.",
    )

    @field_validator("alertmanagers")
    @classmethod
    def _alertmanagers(cls, value: list[str]) -> list[str]:
        urls = [http_url(v) for v in value]
        for url in urls:
            if URL(url).query_string or URL(url).fragment:
                raise ValueError(f"an Alertmanager URL takes no query or fragment: {url!r}")
        seen: set[str] = set()
        for url in urls:
            norm = str(URL(url)).rstrip("/")
            if norm in seen:
                raise ValueError(f"alertmanager {origin(url)} is listed twice")
            seen.add(norm)
        return urls

    @field_validator("external_url")
    @classmethod
    def _external(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Backoff bounds in order; sink names unique (they key the outbox and the metrics)."""
        if self.backoff_initial > self.backoff_max:
            raise ValueError("backoff_initial is larger than backoff_max")
        names = [w.sink_name for w in self.webhooks]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"two webhooks are named {name!r}: give each a distinct name")
        return self

    @property
    def enabled(self) -> bool:
        """Whether any sink is configured."""
        return bool(self.alertmanagers or self.webhooks or self.smtp)
