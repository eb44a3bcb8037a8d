"""The fhir probe against a local aiohttp FHIR server serving an R4 CapabilityStatement."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from tests.probes.conftest import Pki, make_check, refused_port, sample, serve_http
from vigie.probes.base import ProbeContext
from vigie.probes.fhir import FhirProbe, FhirSettings, operation_outcome_text

FIXTURES = Path(__file__).parent.parent / "fixtures" / "fhir"
CAPABILITY = (FIXTURES / "capability-r4.json").read_bytes()
OUTCOME = (FIXTURES / "operation-outcome.json").read_bytes()
SEARCHSET = (FIXTURES / "patient-searchset.json").read_bytes()
TOKEN = "s3cret-token-XYZ"
FHIR_JSON = "application/fhir+json"
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclasses.dataclass
class FhirServer:
    """What the test server answers, and what it was asked."""

    metadata: bytes = CAPABILITY
    metadata_status: int = 200
    search: bytes = SEARCHSET
    search_status: int = 200
    token: str | None = None  # the search requires this bearer token when set
    basic: tuple[str, str] | None = None  # the search requires these credentials when set
    hang: asyncio.Event | None = None  # metadata waits for it when set
    asked: list[tuple[str, str, str | None]] = dataclasses.field(default_factory=list)

    def app(self) -> web.Application:
        """Return the aiohttp app serving [base]/metadata and [base]/Patient."""

        async def metadata(request: web.Request) -> web.Response:
            """Serve the CapabilityStatement (or what the test set)."""
            self.asked.append(("metadata", request.query_string, request.headers.get("Accept")))
            if self.hang is not None:
                await self.hang.wait()
            return web.Response(
                body=self.metadata, status=self.metadata_status, content_type=FHIR_JSON
            )

        async def patient(request: web.Request) -> web.Response:
            """Serve the search, behind the authentication the test set."""
            self.asked.append(("Patient", request.query_string, request.headers.get("Accept")))
            authz = request.headers.get("Authorization")
            wanted = None
            if self.token is not None:
                wanted = f"Bearer {self.token}"
            elif self.basic is not None:
                wanted = aiohttp.encode_basic_auth(*self.basic)
            if wanted is not None and authz != wanted:
                return web.Response(
                    body=_outcome("error", "login", "Authentication required"),
                    status=401,
                    content_type=FHIR_JSON,
                    headers={"WWW-Authenticate": 'Bearer realm="fhir"'},
                )
            return web.Response(body=self.search, status=self.search_status, content_type=FHIR_JSON)

        app = web.Application()
        app.router.add_get("/fhir/R4/metadata", metadata)
        app.router.add_get("/fhir/R4/Patient", patient)
        return app


def _outcome(severity: str, code: str, text: str) -> bytes:
    """Return an OperationOutcome with one issue, as JSON."""
    issue = {"severity": severity, "code": code, "details": {"text": text}}
    return json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()


@asynccontextmanager
async def running(server: FhirServer, pki: Pki | None = None) -> AsyncIterator[str]:
    """Serve server on loopback (HTTPS with pki); yield the FHIR base URL."""
    ssl_context = pki.server_context() if pki is not None else None
    try:
        async with serve_http(server.app(), ssl_context) as url:
            yield f"{url}/fhir/R4"
    finally:
        if server.hang is not None:
            server.hang.set()


@pytest.fixture
def probe() -> FhirProbe:
    """A fresh fhir probe."""
    return FhirProbe()


async def test_capability_statement_matches(probe: FhirProbe, ctx: ProbeContext) -> None:
    """An R4 server declaring the resource types asked for is up, with its info and timings."""
    server = FhirServer()
    async with running(server) as base:
        check = make_check(
            probe, base + "/", fhir_version="4.0", resource_types=["Patient", "Observation"]
        )
        result = await probe(check, ctx)
    assert result.success, result.error
    assert server.asked == [("metadata", "", FHIR_JSON)]
    info = [s for s in result.samples if s.name == "fhir_info"]
    assert [dict(s.labels) for s in info] == [
        {"fhir_version": "4.0.1", "software": "Test FHIR Server", "software_version": "5.7.0"}
    ]
    assert sample(result, "fhir_resource_types") == 6
    assert sample(result, "fhir_http_status_code", request="metadata") == 200
    assert 0 < sample(result, "fhir_metadata_seconds") < 5
    assert [name for name, _ in result.phases] == ["dns", "connect", "tls", "metadata"]


@pytest.mark.parametrize(
    ("expected", "ok"), [("4", True), ("4.0.1", True), ("4.0.2", False), ("3.0", False)]
)
async def test_fhir_version_is_a_dotted_prefix(
    probe: FhirProbe, ctx: ProbeContext, expected: str, ok: bool
) -> None:
    """fhir_version 4 and 4.0.1 accept 4.0.1; 4.0.2 and 3.0 (STU3) do not, naming both."""
    async with running(FhirServer()) as base:
        result = await probe(make_check(probe, base, fhir_version=expected), ctx)
    assert result.success is ok, result.error
    if not ok:
        assert result.error == f"FHIR version 4.0.1, expected {expected}"


async def test_missing_resource_type_is_named(probe: FhirProbe, ctx: ProbeContext) -> None:
    """A resource type the server does not declare fails the check, naming it."""
    async with running(FhirServer()) as base:
        check = make_check(
            probe, base, resource_types=["Patient", "MedicationRequest", "Appointment"]
        )
        result = await probe(check, ctx)
    assert not result.success
    assert result.error == (
        "the CapabilityStatement lacks resource type(s) MedicationRequest, Appointment (6 declared)"
    )


async def test_client_mode_resources_do_not_count(probe: FhirProbe, ctx: ProbeContext) -> None:
    """Only rest entries of mode server declare what the server offers."""
    statement = json.loads(CAPABILITY)
    statement["rest"][0]["mode"] = "client"
    server = FhirServer(metadata=json.dumps(statement).encode())
    async with running(server) as base:
        result = await probe(make_check(probe, base, resource_types=["Patient"]), ctx)
    assert result.error == "the CapabilityStatement lacks resource type(s) Patient (0 declared)"


async def test_search_with_bearer_token_from_file(
    probe: FhirProbe, ctx: ProbeContext, tmp_path: Path
) -> None:
    """The search sends the token read from its file and counts the Bundle's entries."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    server = FhirServer(token=TOKEN)
    async with running(server) as base:
        check = make_check(
            probe, base, search="Patient?_count=1", bearer_token_file=str(token_file)
        )
        result = await probe(check, ctx)
    assert result.success, result.error
    assert server.asked[1] == ("Patient", "_count=1", FHIR_JSON)
    assert sample(result, "fhir_search_entries") == 1
    assert sample(result, "fhir_search_total") == 2
    assert sample(result, "fhir_http_status_code", request="search") == 200
    assert [name for name, _ in result.phases][-2:] == ["metadata", "search"]


async def test_401_reports_the_outcome_without_the_token(
    probe: FhirProbe, ctx: ProbeContext
) -> None:
    """A refused token fails with the status and the OperationOutcome, never the token."""
    server = FhirServer(token=TOKEN)
    async with running(server) as base:
        check = make_check(probe, base, search="Patient?_count=1", bearer_token="wrong-" + TOKEN)
        result = await probe(check, ctx)
    assert not result.success
    assert result.error == (
        "search Patient?_count=1: HTTP 401 (authentication failed):"
        " OperationOutcome error login: Authentication required"
    )
    assert TOKEN not in " ".join(ctx.log.lines)


async def test_basic_auth_from_password_file(
    probe: FhirProbe, ctx: ProbeContext, tmp_path: Path
) -> None:
    """Basic authentication reads its password from a file; a wrong one is a clear 401."""
    password_file = tmp_path / "password"
    password_file.write_text("pa55word\n")
    server = FhirServer(basic=("vigie", "pa55word"))
    async with running(server) as base:
        good = make_check(
            probe,
            base,
            search="Patient?_count=1",
            basic_auth={"username": "vigie", "password_file": str(password_file)},
        )
        bad = make_check(
            probe,
            base,
            search="Patient?_count=1",
            basic_auth={"username": "vigie", "password": "guess"},
        )
        ok, refused = await probe(good, ctx), await probe(bad, ctx)
    assert ok.success, ok.error
    assert not refused.success
    assert refused.error is not None
    assert refused.error.startswith("search Patient?_count=1: HTTP 401 (authentication failed)")
    assert "guess" not in refused.error


async def test_operation_outcome_issue_text_is_reported(
    probe: FhirProbe, ctx: ProbeContext
) -> None:
    """A search refused with an OperationOutcome fails with its severity, code and text."""
    server = FhirServer(search=OUTCOME, search_status=400)
    async with running(server) as base:
        result = await probe(make_check(probe, base, search="Patient?name:exact=TEST"), ctx)
    assert not result.success
    assert result.error == (
        "search Patient?name:exact=TEST: HTTP 400: OperationOutcome fatal code-invalid:"
        ' The "name" parameter has the modifier "exact" which is not supported by this server'
    )


async def test_operation_outcome_in_a_200_metadata(probe: FhirProbe, ctx: ProbeContext) -> None:
    """An OperationOutcome served as the metadata is a failure naming its issue."""
    server = FhirServer(metadata=_outcome("fatal", "exception", "database unavailable"))
    async with running(server) as base:
        result = await probe(make_check(probe, base), ctx)
    assert result.error == "metadata: OperationOutcome fatal exception: database unavailable"


async def test_500_without_outcome_shows_the_body_start(
    probe: FhirProbe, ctx: ProbeContext
) -> None:
    """An error page that is not FHIR is reported by its status and first bytes."""
    server = FhirServer(metadata=b"<html><body>Proxy Error</body></html>", metadata_status=502)
    async with running(server) as base:
        result = await probe(make_check(probe, base), ctx)
    assert result.error == "metadata: HTTP 502: '<html><body>Proxy Error</body></html>'"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>Welcome to nginx</html>", "answer is not JSON at byte 0: starts with '<html>"),
        (b'{"resourceType": "CapabilityStatement", "fhirVer', "answer is not JSON at byte 40"),
        (b'["not", "a", "resource"]', "answer is JSON but not a FHIR resource"),
        (b"\xff\xfe\x00garbage\x1b[31m", "answer is not JSON"),
        (b"[" * 100_000, "answer is not JSON"),
        (b'{"resourceType": "Patient"}', "expected a CapabilityStatement, got resourceType"),
    ],
)
async def test_garbage_metadata_is_a_protocol_failure(
    probe: FhirProbe, ctx: ProbeContext, body: bytes, reason: str
) -> None:
    """HTML, truncated JSON, a JSON array, binary and deeply nested input fail, bounded."""
    async with running(FhirServer(metadata=body)) as base:
        result = await probe(make_check(probe, base), ctx)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith(f"metadata: {reason}"), result.error
    assert result.error.isprintable()
    assert len(result.error) < 200


async def test_huge_answer_is_bounded(probe: FhirProbe, ctx: ProbeContext) -> None:
    """An answer over max_body_bytes is not parsed: the check fails saying so."""
    huge = b'{"resourceType": "CapabilityStatement", "x": "' + b"a" * (3 << 20) + b'"}'
    async with running(FhirServer(metadata=huge)) as base:
        result = await probe(make_check(probe, base, max_body_bytes=1 << 20), ctx)
    assert result.error == "metadata: answer larger than max_body_bytes (1048576 bytes)"


async def test_large_statement_within_the_bound_is_parsed(
    probe: FhirProbe, ctx: ProbeContext
) -> None:
    """A large CapabilityStatement (parsed in a thread) still counts its resource types."""
    statement = json.loads(CAPABILITY)
    names = [f"Custom{a}{b}{c}" for a in _LETTERS for b in _LETTERS for c in _LETTERS][:3000]
    extra = [{"type": name, "documentation": "x" * 200} for name in names]
    statement["rest"][0]["resource"] += extra
    body = json.dumps(statement).encode()
    assert len(body) > 512 * 1024
    async with running(FhirServer(metadata=body)) as base:
        result = await probe(make_check(probe, base, resource_types=[names[-1]]), ctx)
    assert result.success, result.error
    assert sample(result, "fhir_resource_types") == 3006


async def test_outcome_text_is_bounded(probe: FhirProbe, ctx: ProbeContext) -> None:
    """A huge issue text with control characters is cut and cleaned in the reason."""
    server = FhirServer(metadata=_outcome("error", "exception", "\x1b[2J" + "boom " * 50_000))
    async with running(server) as base:
        result = await probe(make_check(probe, base), ctx)
    assert result.error is not None
    assert result.error.startswith("metadata: OperationOutcome error exception:  [2Jboom boom")
    assert len(result.error) <= 512
    assert result.error.isprintable()


def test_operation_outcome_text_lists_a_few_issues() -> None:
    """At most three issues are shown, then how many more there were."""
    issues = [
        {"severity": "warning", "code": "processing", "diagnostics": f"d{i}"} for i in range(5)
    ]
    text = operation_outcome_text({"resourceType": "OperationOutcome", "issue": issues})
    assert text == (
        "OperationOutcome warning processing: d0; warning processing: d1;"
        " warning processing: d2; and 2 more issue(s)"
    )
    assert operation_outcome_text({"issue": "nonsense"}) == "OperationOutcome without issues"


@pytest.mark.parametrize(
    ("search", "reason"),
    [
        (json.dumps({"resourceType": "Patient"}).encode(), "expected a Bundle"),
        (
            json.dumps({"resourceType": "Bundle", "type": "collection"}).encode(),
            "expected a searchset Bundle, got type 'collection'",
        ),
        (
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [
                        {
                            "resource": json.loads(_outcome("error", "too-costly", "too many")),
                            "search": {"mode": "outcome"},
                        }
                    ],
                }
            ).encode(),
            "OperationOutcome error too-costly: too many",
        ),
        (b"garbage", "answer is not JSON"),
    ],
)
async def test_bad_search_answers(
    probe: FhirProbe, ctx: ProbeContext, search: bytes, reason: str
) -> None:
    """A search answering something else than a searchset Bundle, or an error entry, fails."""
    async with running(FhirServer(search=search)) as base:
        result = await probe(make_check(probe, base, search="Patient?_count=1"), ctx)
    assert not result.success
    assert result.error is not None
    assert result.error.startswith(f"search Patient?_count=1: {reason}"), result.error


async def test_min_search_entries(probe: FhirProbe, ctx: ProbeContext) -> None:
    """A page with fewer entries than min_search_entries fails, counting them."""
    async with running(FhirServer()) as base:
        check = make_check(probe, base, search="Patient?_count=1", min_search_entries=2)
        result = await probe(check, ctx)
    assert result.error == "search Patient?_count=1: 1 entry, expected at least 2"


async def test_connection_refused(probe: FhirProbe, ctx: ProbeContext) -> None:
    """A closed port fails naming the address and the reason."""
    port = refused_port()
    result = await probe(make_check(probe, f"http://127.0.0.1:{port}/fhir"), ctx)
    assert result.error == f"metadata: connect to 127.0.0.1:{port} failed: Connection refused"


async def test_silent_server_times_out_naming_the_request(
    probe: FhirProbe, ctx: ProbeContext
) -> None:
    """A server that never answers fails within the check's timeout, naming the request."""
    server = FhirServer(hang=asyncio.Event())
    async with running(server) as base:
        check = dataclasses.replace(make_check(probe, base), timeout=0.5)
        result = await asyncio.wait_for(probe(check, ctx), 5)
    assert result.error == "timeout after 0.45s waiting for the metadata answer"


async def test_https_reports_certificate_expiry(
    probe: FhirProbe, ctx: ProbeContext, pki: Pki
) -> None:
    """Over HTTPS with the CA given, the leaf certificate's expiry is a sample."""
    async with running(FhirServer(), pki) as base:
        check = make_check(probe, base, tls={"ca_file": str(pki.ca_file)})
        result = await probe(check, ctx)
    assert result.success, result.error
    assert sample(result, "probe_tls_cert_expiry_timestamp_seconds") == pki.server_not_after()


async def test_https_unknown_ca_fails(probe: FhirProbe, ctx: ProbeContext, pki: Pki) -> None:
    """A server certificate from an unknown CA fails verification."""
    async with running(FhirServer(), pki) as base:
        result = await probe(make_check(probe, base), ctx)
    assert result.error is not None
    assert result.error.startswith("metadata: TLS: certificate verify failed"), result.error


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"search": "/Patient"}, "must be relative to the base"),
        ({"search": "https://evil.example/Patient"}, "must be relative to the base"),
        ({"search": "../admin"}, "must not contain '.' or '..'"),
        ({"search": "Patient?name=a b"}, "must not contain spaces"),
        ({"resource_types": ["patient"]}, "is not a FHIR resource type name"),
        ({"fhir_version": "R4"}, "must be a dotted version"),
        (
            {"bearer_token": "t", "basic_auth": {"username": "u", "password": "p"}},
            "set only one of basic_auth and bearer_token",
        ),
        ({"bearer_token": "t", "bearer_token_file": "/x"}, "not both"),
        ({"unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    """Bad settings are refused at load, saying why."""
    with pytest.raises(ValidationError, match=message):
        FhirSettings.model_validate(settings)


def test_bearer_token_file_is_read_at_load(tmp_path: Path) -> None:
    """The token file is read once; the dumped settings hold no file and validate again."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    settings = FhirSettings.model_validate({"bearer_token_file": str(token_file)})
    assert settings.authorization() == f"Bearer {TOKEN}"
    dumped = settings.model_dump()
    assert dumped["bearer_token_file"] is None
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ftp://fhir.chu.test/fhir", "must be an http or https URL"),
        ("https://user:pw@fhir.chu.test/fhir", "must not contain credentials"),
        ("https://fhir.chu.test/fhir?x=1", "must not have a query"),
    ],
)
def test_parse_target_rejects(probe: FhirProbe, target: str, message: str) -> None:
    """Targets are http(s) base URLs without credentials or query."""
    with pytest.raises(ValueError, match=message):
        probe.parse_target(target)


def test_parse_target_and_host_of(probe: FhirProbe) -> None:
    """A trailing slash is dropped; the host is the URL's."""
    assert probe.parse_target("https://FHIR.chu.test/fhir/R4/") == "https://fhir.chu.test/fhir/R4"
    assert probe.host_of("https://fhir.chu.test/fhir/R4") == "fhir.chu.test"
