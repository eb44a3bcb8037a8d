"""The dicom probe: associate with a DICOM application entity, C-ECHO, optionally a C-FIND.

A PACS whose port is open but whose application entity refuses associations is down for its
users; this probe says so, with the rejection decoded (result, source and reason, PS3.8 9.3.4).
pynetdicom's API is blocking: it runs in a worker thread, every one of its waits bounded by what
is left of the run's deadline, so a thread left behind by a cancelled run ends on its own soon
after; the cancelled run aborts its association at once, so the archive's slot is freed.

One connection per run, the association's own: an archive counts every accepted connection
against its association limit until it sends an A-ASSOCIATE-RQ or its ARTIM/ACSE timer fires
(30 s in pynetdicom), so a bare TCP connect before the association would hold a slot for
nothing. Why a connection failed is asked by a second plain connect only after it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import threading
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
from pynetdicom.association import Association
from pynetdicom.transport import AddressInformation, AssociationSocket

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
# The least a wait is given once the deadline is near: a release or abort still gets its answer.
_FLOOR_SECONDS = 0.2
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
    connect_failed_after: float | None = None
    error: str | None = None
    phases: list[tuple[str, float]] = field(default_factory=list)


class _Session:
    """One run's association, shared by its worker thread and the event loop so either ends it."""

    def __init__(self, budget: float) -> None:
        """Start the run's deadline now; no association yet."""
        self.budget = budget
        self.deadline = time.monotonic() + budget
        self._lock = threading.Lock()
        self._assoc: Association | None = None
        self._open = False
        self._stopped = False
        self._sockets: list[socket.socket] = []

    @property
    def stopped(self) -> bool:
        """Return True once the event loop gave up on the run (cancelled)."""
        return self._stopped

    def left(self) -> float:
        """Return the seconds left before the deadline, at least the floor a wait needs."""
        return max(self.deadline - time.monotonic(), _FLOOR_SECONDS)

    def created(self, assoc: Association, sock: socket.socket | None) -> None:
        """Keep the association and its socket before it connects (the worker's thread)."""
        with self._lock:
            self._assoc = assoc
            if sock is not None:
                self._sockets.append(sock)

    def opened(self, assoc: Association, sock: socket.socket | None) -> None:
        """Note the connection is up (pynetdicom's thread); shut it if the run was stopped."""
        with self._lock:
            self._assoc, self._open = assoc, True
            if sock is not None:
                self._sockets.append(sock)
            stopped = self._stopped
        if stopped and sock is not None:
            _shutdown(sock)

    def stop(self) -> None:
        """Abort the association now, from any thread, without waiting (a cancelled run)."""
        with self._lock:
            self._stopped = True
            assoc = self._assoc if self._open else None
        if assoc is not None and not (assoc.is_released or assoc.is_aborted or assoc.is_rejected):
            assoc.abort(block=False)

    def close(self) -> None:
        """Close every socket of the run (pynetdicom skips close() when shutdown() fails)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()


def _shutdown(sock: socket.socket) -> None:
    """Shut a socket both ways so the peer sees the close; ignore one not connected."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _ProbeAE(AE):
    """pynetdicom's AE, handing each association and its socket to the run's session.

    Overrides AE._create_socket (pynetdicom 3.0's seam between associate() and the connect):
    the socket of a refused connect is otherwise dropped unclosed by pynetdicom.
    """

    def __init__(self, ae_title: str, session: _Session) -> None:
        """Make the AE with our title for one run's session."""
        super().__init__(ae_title=ae_title)
        self._session = session

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[ssl.SSLContext, str] | None,
    ) -> AssociationSocket:
        """Create the association's socket as pynetdicom does, and give it to the session."""
        sock = super()._create_socket(assoc, address, tls_args)
        self._session.created(assoc, sock.socket)
        return sock


def _status_of(dataset: Any) -> int | None:
    """Return the Status of a DIMSE response dataset, None when there was no response."""
    status = getattr(dataset, "Status", None)
    return int(status) if status is not None else None


def _run_blocking(
    settings: DicomSettings,
    host: str,
    port: int,
    session: _Session,
    tls_args: tuple[ssl.SSLContext, str] | None,
) -> _Outcome:
    """Associate, C-ECHO, maybe C-FIND, release (abort on any failure); for a worker thread."""
    out = _Outcome()
    if session.stopped:  # cancelled while queued for a worker
        out.error = "cancelled"
        return out
    ae = _ProbeAE(settings.calling_ae_title, session)
    ae.add_requested_context(VERIFICATION)
    if settings.find:
        ae.add_requested_context(STUDY_ROOT_FIND)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = session.left()
    start = time.monotonic()

    def opened(event: Any) -> None:
        """Note when the TCP (and TLS) connection is up, and keep its socket to close it."""
        out.connected_after = time.monotonic() - start
        raw = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        session.opened(event.assoc, raw if isinstance(raw, socket.socket) else None)

    try:
        assoc = ae.associate(
            host,
            port,
            ae_title=settings.called_ae_title,
            tls_args=tls_args,
            evt_handlers=[(evt.EVT_CONN_OPEN, opened)],
        )
    except socket.gaierror as exc:  # pynetdicom resolves the name before connecting
        out.error = f"DNS: cannot resolve {host!r}: {exc.strerror}"
        session.close()
        return out
    try:
        took = time.monotonic() - start
        if out.connected_after is None:
            out.connect_failed_after = took
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
            if session.stopped:
                out.error = "cancelled"
            elif took >= session.budget * 0.95:
                out.error = f"no answer to the association request within {session.budget:.2g}s"
            elif assoc.accepted_contexts == [] and assoc.acceptor.primitive is not None:
                out.error = "association accepted but every service proposed was refused"
            else:
                out.error = "association aborted (A-ABORT, or an answer that is not DICOM)"
            return out
        out.accepted = True
        out.associated_after = took
        out.phases.append(("associate", took - out.connected_after))
        try:
            out.error = _exchange(settings, assoc, out, session)
        except Exception as exc:  # pynetdicom or pydicom on a peer's bad answer: report it
            out.error = f"protocol error: {type(exc).__name__}: {sanitise(str(exc), 200)}"
        if out.error is None and session.stopped:
            out.error = "cancelled"
        return out
    finally:
        _end(assoc, session, released=out.error is None)


def _end(assoc: Association, session: _Session, released: bool) -> None:
    """Release (on success) or abort the association, wait for its threads, close its sockets."""
    assoc.acse_timeout = session.left()
    if assoc.is_established:
        if released:
            assoc.release()
        else:
            assoc.abort()
    if session.stopped:
        # The event loop's abort did not wait: wait here for the A-ABORT to go out and the
        # state machine to stop (bounded by the ACSE timeout just set).
        assoc.kill()
    if assoc.is_alive():
        assoc.join(_JOIN_SECONDS)
    session.close()


def _exchange(
    settings: DicomSettings, assoc: Association, out: _Outcome, session: _Session
) -> str | None:
    """Run the C-ECHO, then the C-FIND if asked, on an established association."""
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    if VERIFICATION not in accepted:
        return "the archive refused the Verification service (C-ECHO)"
    if settings.find and STUDY_ROOT_FIND not in accepted:
        return "the archive refused the Study Root Query/Retrieve FIND service (C-FIND)"
    assoc.dimse_timeout = session.left()
    echo_start = time.monotonic()
    out.echo_status = _status_of(assoc.send_c_echo())
    out.echo_seconds = time.monotonic() - echo_start
    out.phases.append(("echo", out.echo_seconds))
    if out.echo_status is None:
        return "no C-ECHO response (timeout, abort or invalid answer)"
    if out.echo_status != _SUCCESS:
        return f"C-ECHO status 0x{out.echo_status:04X}"
    return _find(settings, assoc, out, session) if settings.find else None


def _find(
    settings: DicomSettings, assoc: Association, out: _Outcome, session: _Session
) -> str | None:
    """Run the study-level C-FIND on an established association; return a failure or None.

    Every wait for a response gets what is left of the deadline, and an archive still sending
    matches at the deadline is aborted: the run never outlives its budget by more than a wait.
    """
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    for keyword, value in settings.find_keys.items():
        setattr(query, keyword, value)
    start = time.monotonic()
    matches = 0
    final: int | None = None
    late = False
    assoc.dimse_timeout = session.left()
    for status, _identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
        code = _status_of(status)
        if code in _PENDING:
            matches += 1
            if matches >= settings.max_find_matches:
                final = _SUCCESS
                assoc.abort()
                break
            if time.monotonic() >= session.deadline or session.stopped:
                late = True
                assoc.abort()
                break
            assoc.dimse_timeout = session.left()
            continue
        final = code
        break
    out.find_seconds = time.monotonic() - start
    out.find_matches = matches
    out.phases.append(("find", out.find_seconds))
    if late:
        return f"C-FIND not finished within {session.budget:.2g}s ({matches} match(es) so far)"
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
        session = _Session(budget)
        future = asyncio.get_running_loop().run_in_executor(
            self._workers, _run_blocking, settings, host, port, session, tls_args
        )
        try:
            out = await future
        except asyncio.CancelledError:
            # The thread cannot be cancelled: abort its association now so the archive frees
            # the slot; the thread then ends on its own waits, each bounded by the deadline.
            session.stop()
            raise
        if out.error == "connect":
            out.error = await _connect_failure(check.target, tls_args, session, out)
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


async def _connect_failure(
    target: str,
    tls_args: tuple[ssl.SSLContext, str] | None,
    session: _Session,
    out: _Outcome,
) -> str:
    """Say why pynetdicom could not connect (it only logs why): connect again, plainly or TLS.

    A timeout is said without trying again (the budget is spent); a second connection that
    succeeds is closed at once and said to have succeeded.
    """
    if (out.connect_failed_after or 0.0) >= session.budget * 0.95:
        return f"connect to {target} failed: timeout after {session.budget:.3g}s"
    left = max(session.deadline - time.monotonic(), 0.1)
    host, port = split_host_port(target)
    if tls_args is not None:
        return await _tls_reason(target, host, port, tls_args, left)
    why = await _connect_reason(target, host, port, left)
    return why or f"connect to {target} failed once (a second attempt succeeded)"


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
    target: str, host: str, port: int, tls_args: tuple[ssl.SSLContext, str], budget: float
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
    except (ConnectionRefusedError, socket.gaierror) as exc:  # before any handshake
        return f"connect to {target} failed: {os_error_reason(exc)}"
    except OSError as exc:
        return f"TLS handshake failed: {os_error_reason(exc)}"
    writer.transport.abort()
    return "TLS handshake failed once (a second attempt succeeded)"
