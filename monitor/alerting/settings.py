"""The `alerting:` block of the config: sinks (Alertmanager, webhook, SMTP, HTTP), on-call."""

from __future__ import annotations

import re
import socket
import ssl
from datetime import datetime
from email.utils import parseaddr
from typing import Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from yarl import URL

from vigie.core.durations import Duration
from vigie.core.secrets import ConfigPath, read_secret_file, resolve_secret_field
from vigie.monitor.alerting.model import LABEL_NAME


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
    site: str | None = Field(
        None, description="Site its path depends on, for `vigie check`'s single-site warning."
    )

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
    site: str | None = Field(
        None, description="Site the relay's path depends on, for `vigie check`."
    )

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


class HttpSinkSettings(_Strict):
    """A templated HTTP request per page: SMS and voice gateways, any HTTP API."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Name in levels, metrics and logs."
    )
    url: str = Field(description="URL template (jinja2, sandboxed); only its origin is logged.")
    method: Literal["POST", "PUT", "GET"] = Field("POST", description="HTTP method.")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Header templates, e.g. Authorization with a secret."
    )
    body: str = Field(
        "", description="Body template; fields: message, page, incident, contact, secrets."
    )
    content_type: str = Field("application/json", description="Content-Type of the body.")
    secret_files: dict[str, ConfigPath] = Field(
        default_factory=dict,
        description="Secrets read once at load, as `secrets.<name>` in the templates.",
    )
    expect_status: list[int] = Field(
        default_factory=list, description="Accepted statuses; default: any 2xx."
    )
    expect_body: str | None = Field(
        None, description="Regular expression the response body must match (APIs answering 200"
        " with an error inside)."
    )
    timeout: Duration = Field(10.0, description="Time a request may take.")
    sms: bool = Field(True, description="The message is an SMS: bounded to one GSM part.")
    every_change: bool = Field(
        False, description="Also send every alert state change, not only escalation pages."
    )
    site: str | None = Field(
        None, description="Site its path depends on (the gateway's link), for `vigie check`."
    )

    _secrets: dict[str, SecretStr] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _resolve(self) -> Self:
        """Read the secret files and compile the templates now: an error fails at load."""
        from vigie.monitor.alerting.httpsink import compile_templates

        self._secrets = {key: read_secret_file(path) for key, path in self.secret_files.items()}

        compile_templates(self.url, self.body, self.headers)
        if self.expect_body is not None:
            try:
                re.compile(self.expect_body)
            except re.error as exc:
                raise ValueError(f"expect_body: {exc}") from None
        return self

    @property
    def secrets(self) -> dict[str, SecretStr]:
        """The secrets read from secret_files."""
        return dict(self._secrets)

    @property
    def sink_name(self) -> str:
        """The sink's name: `http:<name>`."""
        return f"http:{self.name}"


class ContactSettings(_Strict):
    """A person (or a desk) who can be paged."""

    name: str = Field(min_length=1, max_length=64, description="Name in levels and calendars.")
    phone: str | None = Field(
        None, pattern=r"^\+?[0-9 .-]{3,20}$", description="Phone number (E.164 preferred)."
    )
    mail: str | None = Field(None, description="Mail address.")

    @field_validator("mail")
    @classmethod
    def _mail(cls, value: str | None) -> str | None:
        return None if value is None else _mailbox(value)


class NotifySettings(_Strict):
    """One message of a level: a sink and whom it addresses."""

    sink: str = Field(
        description="Sink name: http:<name>, webhook:<name>, smtp:<host>:<port>."
    )
    to: str = Field(
        "on-call",
        description="A contact name, `on-call` (who is on call now) or `on-call+N` (the Nth next).",
    )

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        if value.startswith("on-call") and not re.fullmatch(r"on-call(\+\d{1,2})?", value):
            raise ValueError(f"expected on-call or on-call+N, got {value!r}")
        return value


class LevelSettings(_Strict):
    """A level of an escalation policy: who is paged, how long after the incident starts."""

    after: Duration | Literal[0] = Field(
        0, description="Delay from the start of the incident (the first level: usually 0)."
    )
    notify: list[NotifySettings] = Field(min_length=1, description="The messages of this level.")


class RotationSettings(_Strict):
    """A weekly rotation: each contact in turn for a week, from a first handover."""

    start: datetime = Field(
        description="First handover (local time in `timezone`), e.g. a Monday 08:00."
    )
    timezone: str = Field("Europe/Paris", description="IANA time zone of the handovers.")
    contacts: list[str] = Field(min_length=1, description="Contact names, in turn.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class CalendarSettings(_Strict):
    """An iCalendar (ICS) of the on-call duty: each event's summary names a contact."""

    file: ConfigPath | None = Field(None, description="ICS file, re-read when it changes.")
    url: str | None = Field(None, description="ICS URL, re-fetched every `refresh`.")
    refresh: Duration = Field(300.0, description="How often the file or URL is checked.")
    timeout: Duration = Field(10.0, description="Time fetching the URL may take.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value)

    @model_validator(mode="after")
    def _one(self) -> Self:
        """Exactly one source."""
        if (self.file is None) == (self.url is None):
            raise ValueError("set exactly one of file and url")
        return self


class PolicySettings(_Strict):
    """How one team is paged: levels, who is on call, per-tier delays."""

    team: str = Field(
        min_length=1, description="Team of the impacted applications; `*` for any other team."
    )
    levels: list[LevelSettings] = Field(min_length=1, description="Levels, in order.")
    rotation: RotationSettings | None = Field(None, description="Weekly rotation for `on-call`.")
    calendar: CalendarSettings | None = Field(
        None, description="ICS calendar for `on-call`, before the rotation (its fallback)."
    )
    tier_after: dict[int, list[Duration | Literal[0]]] = Field(
        default_factory=dict,
        description="Per application tier, the levels' delays (tier 1 escalates faster).",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Delays increase; tier delays give one per level."""
        delays = [level.after for level in self.levels]
        if delays != sorted(delays):
            raise ValueError("levels' `after` must increase")
        for tier, after in self.tier_after.items():
            if len(after) != len(self.levels):
                raise ValueError(f"tier_after[{tier}] needs one delay per level")
            if list(after) != sorted(after):
                raise ValueError(f"tier_after[{tier}] must increase")
        return self

    def delays(self, tier: int) -> list[float]:
        """Return the levels' delays for an incident whose most critical application has tier."""
        return [float(a) for a in self.tier_after.get(tier, [lv.after for lv in self.levels])]


class AckSettings(_Strict):
    """Acknowledgement links: HMAC-signed, expiring, usable without logging in."""

    secret_file: ConfigPath = Field(description="File holding the signing key (32+ bytes).")
    ttl: Duration = Field(86400.0, description="How long a link stays valid.")
    silence: Duration = Field(
        43200.0, description="Length of the Alertmanager silence an acknowledgement creates."
    )

    _key: bytes = PrivateAttr(b"")

    @model_validator(mode="after")
    def _read_key(self) -> Self:
        """Read the key now; refuse a short one."""
        key = read_secret_file(self.secret_file).get_secret_value().encode()
        if len(key) < 32:
            raise ValueError("secret_file: the key must be at least 32 bytes")
        self._key = key
        return self

    @property
    def key(self) -> bytes:
        """The signing key."""
        return self._key


class OncallSettings(_Strict):
    """Escalation policies per team, contacts, and acknowledgement links."""

    contacts: list[ContactSettings] = Field(default_factory=list, description="Who can be paged.")
    policies: list[PolicySettings] = Field(
        default_factory=list, description="One per team; escalation replaces the pager route."
    )
    ack: AckSettings | None = Field(None, description="Acknowledgement links in messages.")
    tick: Duration = Field(5.0, description="How often due levels are looked for.")

    @model_validator(mode="after")
    def _check(self) -> Self:
        """Contacts named once; every name a policy uses is a contact."""
        names = [c.name for c in self.contacts]
        if len(set(names)) != len(names):
            raise ValueError("two contacts have the same name")
        teams = [p.team for p in self.policies]
        if len(set(teams)) != len(teams):
            raise ValueError("two policies for the same team")
        known = set(names)
        for policy in self.policies:
            used = [n.to for lv in policy.levels for n in lv.notify]
            used += policy.rotation.contacts if policy.rotation else []
            for name in used:
                if not name.startswith("on-call") and name not in known:
                    raise ValueError(f"policy {policy.team!r}: unknown contact {name!r}")
                if name.startswith("on-call") and not (policy.rotation or policy.calendar):
                    raise ValueError(
                        f"policy {policy.team!r}: `{name}` needs a rotation or calendar"
                    )
        return self


def single_site_levels(settings: AlertingSettings) -> list[tuple[tuple[str | int, ...], str]]:
    """Warn about each escalation level whose every sink depends on one site.

    A datacenter that loses power may take the mail relay and the SMS gateway's link with it:
    the way to people must not fail with what it reports.
    """
    sites: dict[str, str | None] = {w.sink_name: w.site for w in settings.webhooks}
    sites |= {h.sink_name: h.site for h in settings.http_sinks}
    if settings.smtp is not None:
        sites[settings.smtp.sink_name] = settings.smtp.site
    out: list[tuple[tuple[str | int, ...], str]] = []
    if settings.oncall is None:
        return out
    for i, policy in enumerate(settings.oncall.policies):
        for j, level in enumerate(policy.levels):
            used = {sites.get(n.sink) for n in level.notify}
            if len(used) == 1 and None not in used:
                out.append(
                    (
                        ("alerting", "oncall", "policies", i, "levels", j),
                        f"policy {policy.team!r} level {j + 1}: every sink depends on site "
                        f"{used.pop()!r}; add one reached another way (the other site's link, "
                        "a cellular modem)",
                    )
                )
    return out


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
    http_sinks: list[HttpSinkSettings] = Field(
        default_factory=list, description="Templated HTTP sinks (SMS and voice gateways)."
    )
    oncall: OncallSettings | None = Field(
        None, description="Escalation policies, contacts and acknowledgement links."
    )
    backoff_initial: Duration = Field(1.0, description="First retry delay bound after a failure.")
    backoff_max: Duration = Field(60.0, description="Largest retry delay bound.")
    flush_timeout: Duration = Field(5.0, description="On stop, time left to deliver what is due.")
    vigie_instance: str = Field(
        default_factory=_default_instance,
        min_length=1,
        description="Value of the vigie_instance annotation on every alert (a label on the"
        " watchdog only); default: replicas.instance, else the host name.",
    )
    external_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels added to every alert, as Prometheus' external_labels: the same on"
        " every replica, or Alertmanager cannot deduplicate their alerts.",
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

    @field_validator("external_labels")
    @classmethod
    def _external_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for name, label in value.items():
            if not LABEL_NAME.match(name) or not label:
                raise ValueError(f"external label {name!r}: a label name and a non-empty value")
        return value

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
        http = [h.sink_name for h in self.http_sinks]
        if len(set(http)) != len(http):
            raise ValueError("two http_sinks have the same name")
        if self.oncall is not None and self.oncall.ack is not None and not self.external_url:
            raise ValueError("oncall.ack needs external_url: the links in pages point to it")
        if self.oncall is not None:
            sinks = set(names) | set(http) | {s for s in [self.smtp and self.smtp.sink_name] if s}
            for policy in self.oncall.policies:
                for level in policy.levels:
                    for notify in level.notify:
                        if notify.sink not in sinks:
                            raise ValueError(
                                f"policy {policy.team!r}: unknown sink {notify.sink!r}"
                                f" (known: {sorted(sinks)})"
                            )
        return self

    @property
    def enabled(self) -> bool:
        """Whether any sink is configured."""
        return bool(self.alertmanagers or self.webhooks or self.smtp or self.http_sinks)
