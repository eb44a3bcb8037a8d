"""The dicom probe: associate with a DICOM application entity, C-ECHO, optionally a C-FIND.

A PACS whose port is open but whose application entity refuses associations is down for its
users; this probe says so, with the rejection decoded (result, source and reason, PS3.8 9.3.4).
pynetdicom's API is blocking: it runs in a worker thread, every one of its timeouts bounded by
the check's timeout, so a thread left behind by a cancelled run ends on its own soon after.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom import config
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pydicom.valuerep import validate_value
from pynetdicom import AE, evt

from vigie.core.hostport import HostPortTarget, split_host_port
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.probes.base import Check, ProbeContext
from vigie.probes.tls import SslContextCache, TlsSettings, describe_ssl_error, os_error_reason

__all__ = ["STUDY_ROOT_FIND", "VERIFICATION", "DicomProbe", "DicomSettings", "reject_reason"]

VERIFICATION = UID("1.2.840.10008.1.1")
"""The Verification SOP class (C-ECHO)."""
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
"""Study Root Query/Retrieve Information Model - FIND."""

# The probe's own deadline, as a share of the check's timeout.
_OWN_DEADLINE_SHARE = 0.9
_AE_TITLE = re.compile(r"^[ -\[\]-~]{1,16}$")  # printable ASCII but backslash, 16 at most
_SUCCESS = 0x0000
_PENDING = (0xFF00, 0xFF01)

_JOIN_SECONDS = 2.0
_WORKERS = 32
_ACCEPTED_HELP = "1 if the application entity accepted the association, else 0."
_RESULTS = {1: "permanent", 2: "transient"}
_SOURCES = {
    1: "the service user",
    2: "the service provider (ACSE)",
    3: "the service provider (presentation)",
}
_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


def reject_reason(result: int | None, source: int | None, diagnostic: int | None) -> str:
    """Return an A-ASSOCIATE-RJ's result, source and reason in words (PS3.8 9.3.4)."""
    kind = _RESULTS.get(result or 0, f"result {result}")
    who = _SOURCES.get(source or 0, f"source {source}")
    why = _REASONS.get((source or 0, diagnostic or 0), f"reason {diagnostic}")
    return f"association rejected ({kind}) by {who}: {why}"


class DicomSettings(BaseModel):
    """Settings of a dicom check; the target is the application entity's host:port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    calling_ae_title: str = Field(
        "VIGIE", description="Our AE title (the archive may accept only known callers)."
    )
    called_ae_title: str = Field(
        "ANY-SCP", description="The archive's AE title, as configured on the PACS."
    )
    find: bool = Field(
        False,
        description="After the C-ECHO, run a study-level C-FIND (Study Root) to prove the"
        " archive answers queries.",
    )
    find_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Matching keys of the C-FIND by DICOM keyword (e.g. {StudyDate: '20250101',"
        " PatientID: 'VIGIE-TEST'}); StudyInstanceUID is always returned.",
    )
    max_find_matches: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Stop reading C-FIND matches after this many (the association is aborted).",
    )
    tls: bool = Field(False, description="Use DICOM TLS (the connection is wrapped before PDUs).")
    tls_config: TlsSettings = Field(
        default_factory=TlsSettings,
        description="Server verification and client certificate, when tls is true.",
    )

    @field_validator("calling_ae_title", "called_ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        """Require 1-16 printable ASCII characters, no backslash, not only spaces (PS3.5)."""
        if not _AE_TITLE.match(value) or not value.strip():
            raise ValueError(
                "an AE title is 1 to 16 printable ASCII characters, no backslash, not all spaces"
            )
        return value

    @field_validator("find_keys")
    @classmethod
    def _valid_keys(cls, value: dict[str, str]) -> dict[str, str]:
        """Require DICOM keywords pydicom knows."""
        for keyword, text in value.items():
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ValueError(f"{keyword!r} is not a DICOM keyword")
            vr = dictionary_VR(tag)
            if vr == "SQ":
                raise ValueError(f"{keyword} is a sequence: not a matching key here")
            for part in text.split("\\"):
                try:
                    validate_value(vr, part, config.RAISE)
                except ValueError as exc:
                    raise ValueError(f"{keyword}: {str(exc).split(' Please see')[0]}") from None
        return value


@dataclass
class _Outcome:
    """What the worker thread saw: times, the association's fate, statuses, a failure reason."""

    connected_after: float | None = None
    associated_after: float | None = None
    echo_seconds: float | None = None
    echo_status: int | None = None
    find_seconds: float | None = None
    find_matches: int | None = None
    accepted: bool = False
    error: str | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)


def _status_of(dataset: Any) -> int | None:
    """Return the Status of a DIMSE response dataset, None when there was no response."""
    status = getattr(dataset, "Status", None)
    return int(status) if status is not None else None


def _run_blocking(
    settings: DicomSettings,
    host: str,
    port: int,
    budget: float,
    tls_args: tuple[ssl.SSLContext, str] | None,
) -> _Outcome:
    """Associate, C-ECHO, maybe C-FIND, release; blocking, meant for a worker thread."""
    out = _Outcome()
    ae = AE(ae_title=settings.calling_ae_title)
    ae.add_requested_context(VERIFICATION)
    if settings.find:
        ae.add_requested_context(STUDY_ROOT_FIND)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = budget
    start = time.monotonic()

    sockets: list[socket.socket] = []

    def opened(event: Any) -> None:
        """Note when the TCP (and TLS) connection is up, and keep its socket to close it."""
        out.connected_after = time.monotonic() - start
        raw = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        if isinstance(raw, socket.socket):
            sockets.append(raw)

    assoc = ae.associate(
        host,
        port,
        ae_title=settings.called_ae_title,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_CONN_OPEN, opened)],
    )
    try:
        took = time.monotonic() - start
        if out.connected_after is None:
            out.error = "connect"
            return out
        out.phases.append(("connect", out.connected_after))
        if assoc.is_rejected:
            rsp = assoc.acceptor.primitive
            out.error = reject_reason(
                getattr(rsp, "result", None),
                getattr(rsp, "result_source", None),
                getattr(rsp, "diagnostic", None),
            )
            return out
        if not assoc.is_established:
            if took >= budget * 0.95:
                out.error = f"no answer to the association request within {budget:.2g}s"
            elif assoc.accepted_contexts == [] and assoc.acceptor.primitive is not None:
                out.error = "association accepted but every service proposed was refused"
            else:
                out.error = "association aborted (A-ABORT, or an answer that is not DICOM)"
            return out
        out.accepted = True
        out.associated_after = took
        out.phases.append(("associate", took - out.connected_after))
        try:
            out.error = _exchange(settings, assoc, out)
        except Exception as exc:  # pynetdicom or pydicom on a peer's bad answer: report it
            out.error = f"protocol error: {type(exc).__name__}: {sanitise(str(exc), 200)}"
        return out
    finally:
        if assoc.is_established:
            if out.error is None:
                assoc.release()
            else:
                assoc.abort()
        # pynetdicom skips close() when shutdown() fails (a peer that already reset): close the
        # socket once its threads are done, so no descriptor is left to the garbage collector.
        if assoc.is_alive():
            assoc.join(_JOIN_SECONDS)
        for sock in sockets:
            sock.close()


def _exchange(settings: DicomSettings, assoc: Any, out: _Outcome) -> str | None:
    """Run the C-ECHO, then the C-FIND if asked, on an established association."""
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    if VERIFICATION not in accepted:
        return "the archive refused the Verification service (C-ECHO)"
    if settings.find and STUDY_ROOT_FIND not in accepted:
        return "the archive refused the Study Root Query/Retrieve FIND service (C-FIND)"
    echo_start = time.monotonic()
    out.echo_status = _status_of(assoc.send_c_echo())
    out.echo_seconds = time.monotonic() - echo_start
    out.phases.append(("echo", out.echo_seconds))
    if out.echo_status is None:
        return "no C-ECHO response (timeout, abort or invalid answer)"
    if out.echo_status != _SUCCESS:
        return f"C-ECHO status 0x{out.echo_status:04X}"
    return _find(settings, assoc, out) if settings.find else None


def _find(settings: DicomSettings, assoc: Any, out: _Outcome) -> str | None:
    """Run the study-level C-FIND on an established association; return a failure or None."""
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    for keyword, value in settings.find_keys.items():
        setattr(query, keyword, value)
    start = time.monotonic()
    matches = 0
    final: int | None = None
    for status, _identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
        code = _status_of(status)
        if code in _PENDING:
            matches += 1
            if matches >= settings.max_find_matches:
                final = _SUCCESS
                assoc.abort()
                break
            continue
        final = code
        break
    out.find_seconds = time.monotonic() - start
    out.find_matches = matches
    out.phases.append(("find", out.find_seconds))
    if final is None:
        return "no C-FIND response (timeout, abort or invalid answer)"
    if final != _SUCCESS:
        return f"C-FIND status 0x{final:04X} after {matches} match(es)"
    return None


def _gauge(name: str, value: float, help: str) -> Sample:
    """Return a gauge sample."""
    return Sample(name=name, value=value, type="gauge", help=help)


class DicomProbe(HostPortTarget):
    """Probe kind "dicom": C-ECHO (and optionally a C-FIND) with AE titles, via pynetdicom."""

    kind: ClassVar[str] = "dicom"
    Settings: ClassVar[type[BaseModel]] = DicomSettings

    def __init__(self) -> None:
        """Start with an empty SSL context cache and the probe's own worker threads.

        Its own pool, not asyncio's default one (5 threads on 1 core): archives that never
        answer hold a thread each until pynetdicom's timeouts, and must not starve the other
        users of the default pool.
        """
        self._ssl_contexts = SslContextCache()
        self._workers = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="vigie-dicom")

    async def __call__(self, check: Check[DicomSettings], ctx: ProbeContext) -> ProbeResult:
        """Run the DICOM exchange in a worker thread and report."""
        settings = check.settings
        host, port = split_host_port(check.target)
        tls_args: tuple[ssl.SSLContext, str] | None = None
        if settings.tls:
            try:
                sslctx = self._ssl_contexts.get(settings.tls_config)
            except ValueError as exc:
                return ProbeResult(success=False, error=bound_text(f"TLS: {exc}"))
            tls_args = (sslctx, settings.tls_config.server_name or host)
        budget = check.timeout * _OWN_DEADLINE_SHARE
        ctx.log(
            "dicom_associate",
            host=host,
            port=port,
            calling=settings.calling_ae_title,
            called=settings.called_ae_title,
        )
        # A bare TCP connect first: it names why a closed or unreachable port fails (pynetdicom
        # only logs it, and leaks the socket of a refused connect), then closes at once.
        loop = asyncio.get_running_loop()
        start = loop.time()
        why = await _connect_reason(check.target, host, port, budget)
        if why is not None:
            ctx.log("dicom_failed", error=why)
            return ProbeResult(
                success=False,
                error=bound_text(why),
                samples=(_gauge("dicom_association_accepted", 0.0, _ACCEPTED_HELP),),
            )
        budget -= loop.time() - start
        out = await loop.run_in_executor(
            self._workers, _run_blocking, settings, host, port, budget, tls_args
        )
        if out.error == "connect" and tls_args is not None:
            out.error = await _tls_reason(host, port, tls_args, budget)
        elif out.error == "connect":
            out.error = f"connect to {check.target} failed on the second connection"
        samples = [
            _gauge("dicom_association_accepted", 1.0 if out.accepted else 0.0, _ACCEPTED_HELP)
        ]
        if out.associated_after is not None:
            samples.append(
                _gauge(
                    "dicom_association_seconds",
                    out.associated_after,
                    "Seconds to connect and have the association accepted.",
                )
            )
        if out.echo_seconds is not None:
            samples.append(
                _gauge("dicom_echo_seconds", out.echo_seconds, "Seconds of the C-ECHO exchange.")
            )
        if out.echo_status is not None:
            samples.append(
                _gauge(
                    "dicom_echo_status",
                    out.echo_status,
                    "DIMSE status of the C-ECHO response (0 is success).",
                )
            )
        if out.find_seconds is not None and out.find_matches is not None:
            samples += [
                _gauge("dicom_find_seconds", out.find_seconds, "Seconds of the study C-FIND."),
                _gauge(
                    "dicom_find_matches",
                    out.find_matches,
                    "Studies the C-FIND returned (at most max_find_matches).",
                ),
            ]
        if out.error is not None:
            error = bound_text(
                f"{out.error} (called {settings.called_ae_title!r},"
                f" calling {settings.calling_ae_title!r})"
                if out.error.startswith("association rejected")
                else out.error
            )
            ctx.log("dicom_failed", error=error)
            return ProbeResult(
                success=False, error=error, samples=tuple(samples), phases=tuple(out.phases)
            )
        return ProbeResult(success=True, samples=tuple(samples), phases=tuple(out.phases))


async def _connect_reason(target: str, host: str, port: int, budget: float) -> str | None:
    """Open and close a TCP connection; return why it fails, or None when it connects."""
    try:
        async with asyncio.timeout(budget):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"connect to {target} failed: timeout after {budget:.3g}s"
    except socket.gaierror as exc:
        return f"DNS: cannot resolve {host!r}: {exc.strerror}"
    except OSError as exc:
        return f"connect to {target} failed: {os_error_reason(exc)}"
    writer.transport.abort()
    return None


async def _tls_reason(
    host: str, port: int, tls_args: tuple[ssl.SSLContext, str], budget: float
) -> str:
    """Connect again with TLS (pynetdicom only logs why its handshake failed); return why."""
    try:
        async with asyncio.timeout(max(budget, 0.1)):
            _reader, writer = await asyncio.open_connection(
                host, port, ssl=tls_args[0], server_hostname=tls_args[1]
            )
    except TimeoutError:
        return "TLS: handshake timeout"
    except ssl.SSLError as exc:
        return describe_ssl_error(exc)
    except OSError as exc:
        return f"TLS handshake failed: {os_error_reason(exc)}"
    writer.transport.abort()
    return "TLS handshake failed once (a second attempt succeeded)"
