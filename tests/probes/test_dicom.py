"""The dicom probe against pynetdicom's own SCP (with AE title checks) and raw TCP peers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from tests.probes.conftest import Pki, make_check, refused_port, sample, serve_tcp
from tests.waiting import wait_for
from vigie.probes.base import ProbeContext
from vigie.probes.dicom import (
    STUDY_ROOT_FIND,
    VERIFICATION,
    DicomProbe,
    DicomSettings,
    reject_reason,
)

STUDIES = 3


@dataclasses.dataclass
class Archive:
    """A pynetdicom SCP: its port, its server and the C-FIND queries it received."""

    port: int
    server: ThreadedAssociationServer | None = None
    queries: list[Dataset] = dataclasses.field(default_factory=list)

    def active(self) -> int:
        """Return how many associations the SCP holds now (its own count, for its limit)."""
        assert self.server is not None
        return len(self.server.active_associations)


@contextmanager
def archive(
    find_status: int = 0x0000,
    ssl_context: ssl.SSLContext | None = None,
    require_calling: tuple[str, ...] = ("VIGIE",),
    services: tuple[str, ...] = (VERIFICATION, STUDY_ROOT_FIND),
    drip: threading.Event | None = None,
) -> Iterator[Archive]:
    """Run pynetdicom's SCP as AE "PACS" on a free port: called AE title required, callers listed.

    It answers C-ECHO, and a study-level C-FIND with STUDIES matches then find_status; with
    drip, it instead sends a match every 50 ms until drip is set or the association ends.
    Its association limit is pynetdicom's default (10).
    """
    ae = AE(ae_title="PACS")
    for service in services:
        ae.add_supported_context(service)
    ae.require_called_aet = True
    ae.require_calling_aet = list(require_calling)
    state = Archive(port=0)

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        """Yield STUDIES study matches, then the final status."""
        state.queries.append(event.identifier)
        if drip is not None:
            while not drip.wait(0.05) and event.assoc.dul.is_alive():
                yield 0xFF00, event.identifier
            return
        for n in range(STUDIES):
            match = Dataset()
            match.QueryRetrieveLevel = "STUDY"
            match.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{n + 1}"
            yield 0xFF00, match
        yield find_status, None

    server = ae.start_server(
        ("127.0.0.1", 0),
        block=False,
        ssl_context=ssl_context,
        evt_handlers=[(evt.EVT_C_FIND, on_find)],
    )
    assert server is not None
    state.port, state.server = server.server_address[1], server
    try:
        yield state
    finally:
        if drip is not None:
            drip.set()
        server.shutdown()


@pytest.fixture
def probe() -> DicomProbe:
    """A fresh dicom probe."""
    return DicomProbe()


async def test_echo_accepted(probe: DicomProbe, ctx: ProbeContext) -> None:
    """The right AE titles: association accepted, C-ECHO status 0, phases in order."""
    with archive() as pacs:
        check = make_check(probe, f"127.0.0.1:{pacs.port}", called_ae_title="PACS")
        result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "dicom_association_accepted") == 1
    assert sample(result, "dicom_echo_status") == 0
    assert 0 < sample(result, "dicom_echo_seconds") < 5
    assert 0 < sample(result, "dicom_association_seconds") < 5
    assert [name for name, _ in result.phases] == ["connect", "associate", "echo"]


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        (
            {"called_ae_title": "WRONG"},
            "association rejected (permanent) by the service user: called AE title not"
            " recognised (called 'WRONG', calling 'VIGIE')",
        ),
        (
            {"called_ae_title": "PACS", "calling_ae_title": "INTRUDER"},
            "association rejected (permanent) by the service user: calling AE title not"
            " recognised (called 'PACS', calling 'INTRUDER')",
        ),
    ],
)
async def test_rejected_with_reason(
    probe: DicomProbe, ctx: ProbeContext, settings: dict[str, str], reason: str
) -> None:
    """A refused called or calling AE title fails with the rejection decoded into words."""
    with archive() as pacs:
        result = await probe(make_check(probe, f"127.0.0.1:{pacs.port}", **settings), ctx)
    assert result.error == reason
    assert sample(result, "dicom_association_accepted") == 0
    assert [name for name, _ in result.phases] == ["connect"]


async def test_find_counts_studies(probe: DicomProbe, ctx: ProbeContext) -> None:
    """find: a study-level C-FIND with the configured keys; matches counted, success on 0x0000."""
    with archive() as pacs:
        check = make_check(
            probe,
            f"127.0.0.1:{pacs.port}",
            called_ae_title="PACS",
            find=True,
            find_keys={
                "PatientID": "VIGIE-TEST",
                "StudyDate": "20250101-",
                "ModalitiesInStudy": "CT\\MR",
            },
        )
        result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "dicom_find_matches") == STUDIES
    assert sample(result, "dicom_find_seconds") > 0
    assert [name for name, _ in result.phases] == ["connect", "associate", "echo", "find"]
    (query,) = pacs.queries
    assert query.QueryRetrieveLevel == "STUDY" and query.PatientID == "VIGIE-TEST"
    assert query.StudyDate == "20250101-" and list(query.ModalitiesInStudy) == ["CT", "MR"]


async def test_find_failure_status(probe: DicomProbe, ctx: ProbeContext) -> None:
    """A C-FIND ending in a failure status (0xC000, unable to process) fails naming it."""
    with archive(find_status=0xC000) as pacs:
        check = make_check(probe, f"127.0.0.1:{pacs.port}", called_ae_title="PACS", find=True)
        result = await probe(check, ctx)
    assert result.error == f"C-FIND status 0xC000 after {STUDIES} match(es)"
    assert sample(result, "dicom_association_accepted") == 1


async def test_find_matches_bounded(probe: DicomProbe, ctx: ProbeContext) -> None:
    """Reading matches stops at max_find_matches (the association is aborted), still a success."""
    with archive() as pacs:
        check = make_check(
            probe, f"127.0.0.1:{pacs.port}", called_ae_title="PACS", find=True, max_find_matches=2
        )
        result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "dicom_find_matches") == 2


@pytest.mark.parametrize(
    ("services", "reason"),
    [
        ((VERIFICATION,), "the archive refused the Study Root Query/Retrieve FIND service"),
        ((STUDY_ROOT_FIND,), "the archive refused the Verification service (C-ECHO)"),
    ],
)
async def test_service_refused(
    probe: DicomProbe, ctx: ProbeContext, services: tuple[str, ...], reason: str
) -> None:
    """An archive accepting the association but not a service the probe needs says which."""
    with archive(services=services) as pacs:
        check = make_check(probe, f"127.0.0.1:{pacs.port}", called_ae_title="PACS", find=True)
        result = await probe(check, ctx)
    assert result.error is not None and result.error.startswith(reason), result.error
    assert sample(result, "dicom_association_accepted") == 1


async def test_no_service_accepted(probe: DicomProbe, ctx: ProbeContext) -> None:
    """An archive supporting none of the services proposed: accepted, then nothing usable."""
    with archive(services=(STUDY_ROOT_FIND,)) as pacs:
        check = make_check(probe, f"127.0.0.1:{pacs.port}", called_ae_title="PACS")
        result = await probe(check, ctx)
    assert result.error == "association accepted but every service proposed was refused"


async def test_refused(probe: DicomProbe, ctx: ProbeContext) -> None:
    """A closed port fails with 'Connection refused' (found by a second, plain attempt)."""
    port = refused_port()
    result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
    assert result.error == f"connect to 127.0.0.1:{port} failed: Connection refused"
    assert sample(result, "dicom_association_accepted") == 0


async def test_garbage_peer(probe: DicomProbe, ctx: ProbeContext) -> None:
    """A peer answering the association request with HTTP fails as an aborted association."""
    got = asyncio.Event()

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read the A-ASSOCIATE-RQ header, answer with an HTTP error, wait for the close."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readexactly(6)
            got.set()
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 50)
            await writer.drain()
            await reader.read()
        writer.close()

    async with serve_tcp(http) as port:
        result = await probe(make_check(probe, f"127.0.0.1:{port}"), ctx)
        await wait_for(got.is_set, "the peer to get the request")
    assert result.error == "association aborted (A-ABORT, or an answer that is not DICOM)"


async def test_silent_peer(probe: DicomProbe, ctx: ProbeContext) -> None:
    """A peer that accepts the connection and says nothing fails naming the wait."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read until the probe closes."""
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    async with serve_tcp(silent) as port:
        check = dataclasses.replace(make_check(probe, f"127.0.0.1:{port}"), timeout=1.0)
        result = await probe(check, ctx)
    assert result.error == "no answer to the association request within 0.9s"


async def test_cancelled_run_ends_its_association(probe: DicomProbe, ctx: ProbeContext) -> None:
    """A run the scheduler cancels still ends its association on the probe's own timeouts.

    The worker thread cannot be cancelled: the evidence is the peer seeing the connection
    closed soon after the probe's deadline, with no reader left behind.
    """
    connected, closed = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    closed_at: list[float] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Note the association request, then read until the probe closes."""
        with contextlib.suppress(ConnectionError):
            if await reader.read(1):
                connected.set()
                await reader.read()
                closed_at.append(loop.time())
                closed.set()
        writer.close()

    async with serve_tcp(silent) as port:
        check = dataclasses.replace(make_check(probe, f"127.0.0.1:{port}"), timeout=1.0)
        task = asyncio.create_task(probe(check, ctx))
        await wait_for(connected.is_set, "the association request")
        cancelled_at = loop.time()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_for(closed.is_set, "the association's connection to close", within=10)
    assert closed_at[0] - cancelled_at < 5  # 0.9 s of ACSE timeout, with a loaded machine


async def test_tls(probe: DicomProbe, ctx: ProbeContext, pki: Pki) -> None:
    """DICOM TLS: with the CA file the echo succeeds; without it the reason names TLS."""
    # The archive is shut down off the loop: its server waits for the last connection to
    # close, which the loop carries out (uvloop closes a failed TLS connection on its next
    # iteration; a shutdown blocking the loop would wait for it forever).
    stack = contextlib.ExitStack()
    pacs = stack.enter_context(archive(ssl_context=pki.server_context()))
    try:
        target = f"127.0.0.1:{pacs.port}"
        good = await probe(
            make_check(
                probe,
                target,
                called_ae_title="PACS",
                tls=True,
                tls_config={"ca_file": str(pki.ca_file)},
            ),
            ctx,
        )
        bad = await probe(make_check(probe, target, called_ae_title="PACS", tls=True), ctx)
    finally:
        await asyncio.to_thread(stack.close)
    assert good.success, good.error
    assert bad.error is not None and bad.error.startswith("TLS: certificate verify failed")


def test_reject_reason_words() -> None:
    """Every A-ASSOCIATE-RJ reason of PS3.8 9.3.4 is said in words; unknown values by number."""
    assert reject_reason(2, 3, 1) == (
        "association rejected (transient) by the service provider (presentation):"
        " temporary congestion"
    )
    assert reject_reason(1, 2, 2) == (
        "association rejected (permanent) by the service provider (ACSE):"
        " protocol version not supported"
    )
    assert reject_reason(9, 9, 9) == "association rejected (result 9) by source 9: reason 9"


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"called_ae_title": "A" * 17}, "an AE title is 1 to 16"),
        ({"calling_ae_title": "BAD\\AE"}, "an AE title is 1 to 16"),
        ({"calling_ae_title": "   "}, "an AE title is 1 to 16"),
        ({"find_keys": {"NotAKeyword": "x"}}, "'NotAKeyword' is not a DICOM keyword"),
        ({"find_keys": {"StudyDate": "yesterday"}}, "StudyDate: Invalid value for VR DA"),
        ({"find_keys": {"PatientID": "x" * 65}}, "PatientID: The value length \\(65\\) exceeds"),
        ({"find_keys": {"ModalitiesInStudy": "CT\\mr"}}, "ModalitiesInStudy: Invalid value"),
        ({"find_keys": {"ReferencedStudySequence": ""}}, "is a sequence"),
        ({"max_find_matches": 0}, "greater than or equal to 1"),
    ],
)
def test_settings_rejected(settings: dict[str, Any], error: str) -> None:
    """Bad settings are refused at load time naming what is wrong."""
    with pytest.raises(ValidationError, match=error):
        DicomSettings.model_validate(settings)


async def test_thirty_runs_in_a_row(probe: DicomProbe, ctx: ProbeContext) -> None:
    """30 runs in a row against an SCP limited to 10 associations all succeed: none lingers.

    The probe used to open a bare TCP connection before its association, which pynetdicom's
    SCP counted against its limit until its ACSE timeout (30 s): the 9th run was rejected.
    """
    with archive() as pacs:
        check = make_check(probe, f"127.0.0.1:{pacs.port}", called_ae_title="PACS")
        for n in range(30):
            result = await probe(check, ctx)
            assert result.success, f"run {n + 1}: {result.error}"
        await wait_for(lambda: pacs.active() == 0, "the SCP to hold no association")


async def test_timed_out_find_aborts_at_once(probe: DicomProbe, ctx: ProbeContext) -> None:
    """A run the scheduler's timeout cancels during a C-FIND aborts its association at once.

    The timeout scope is the scheduler's (asyncio.timeout), fired once the C-FIND is under way:
    the SCP must drop to 0 associations well before the probe's own deadline (54 s).
    """
    drip = threading.Event()
    scopes: list[asyncio.Timeout] = []
    with archive(drip=drip) as pacs:
        target = f"127.0.0.1:{pacs.port}"
        check = make_check(probe, target, called_ae_title="PACS", find=True)
        check = dataclasses.replace(check, timeout=60.0)

        async def scheduled() -> None:
            """Run the check inside a timeout scope, as the scheduler does."""
            async with asyncio.timeout(None) as scope:
                scopes.append(scope)
                await probe(check, ctx)

        task = asyncio.create_task(scheduled())
        await wait_for(lambda: pacs.queries, "the C-FIND to reach the SCP")
        scopes[0].reschedule(asyncio.get_running_loop().time())
        with pytest.raises(TimeoutError):
            await task
        await wait_for(lambda: pacs.active() == 0, "the SCP to see the abort", within=10)
        # The probe still works after it: the slot and a worker thread are free again.
        result = await probe(make_check(probe, target, called_ae_title="PACS"), ctx)
    assert result.success, result.error


async def test_endless_find_bounded_by_deadline(probe: DicomProbe, ctx: ProbeContext) -> None:
    """An archive sending matches without end is aborted at the run's deadline, and says so."""
    drip = threading.Event()
    with archive(drip=drip) as pacs:
        check = make_check(probe, f"127.0.0.1:{pacs.port}", called_ae_title="PACS", find=True)
        result = await probe(dataclasses.replace(check, timeout=2.0), ctx)
        await wait_for(lambda: pacs.active() == 0, "the SCP to see the abort", within=10)
    assert result.error is not None
    assert result.error.startswith("C-FIND not finished within 1.8s ("), result.error
    assert sample(result, "dicom_find_matches") > 0


async def test_unknown_host(probe: DicomProbe, ctx: ProbeContext) -> None:
    """A name that does not resolve fails naming DNS (pynetdicom resolves it, the probe says so)."""
    result = await probe(make_check(probe, "no-such-host.invalid:104"), ctx)
    assert result.error is not None
    assert result.error.startswith("DNS: cannot resolve 'no-such-host.invalid'"), result.error
    assert sample(result, "dicom_association_accepted") == 0
