"""The dns probe: ask a named DNS server one question (UDP or TCP) and check rcode and answers."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import ClassVar, Literal, Self, get_args

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vigie.core.hostport import HostPortTarget, split_host_port
from vigie.core.results import ProbeResult, Sample, bound_text
from vigie.core.sanitise import sanitise
from vigie.probes.base import Check, ProbeContext
from vigie.probes.tls import os_error_reason

__all__ = ["RCODES", "DnsProbe", "DnsSettings"]

RcodeName = Literal[
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
]
RCODES: tuple[str, ...] = get_args(RcodeName)
QueryType = Literal["A", "AAAA", "SRV", "PTR", "MX", "CNAME", "NS", "TXT", "SOA"]
_DEFAULT_PORT = 53
# The probe's own deadline, as a share of the check's timeout, so a silent server is reported
# as such rather than as the scheduler's bare timeout.
_OWN_DEADLINE_SHARE = 0.9
_SHOWN_ANSWERS = 5


def _normalise_answer(text: str) -> str:
    """Return an answer's text form compared case-insensitively, trailing dots ignored."""
    return " ".join(word.rstrip(".") for word in text.lower().split())


class DnsSettings(BaseModel):
    """Settings of a dns check; the target is the server to ask."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query_name: str = Field(
        description="Name to look up; for PTR an IP address is turned into its reverse name."
    )
    query_type: QueryType = Field("A", description="Record type asked.")
    transport: Literal["udp", "tcp"] = Field(
        "udp", description="udp (retried over TCP when the answer is truncated) or tcp."
    )
    recursion_desired: bool = Field(True, description="Set the RD flag in the query.")
    valid_rcodes: list[RcodeName] = Field(
        default_factory=lambda: list[RcodeName](["NOERROR"]),
        min_length=1,
        description="Response codes counted as success.",
    )
    min_answers: int = Field(
        1,
        ge=0,
        description="Fewest answer records required when the rcode is NOERROR (0 accepts an"
        " empty answer).",
    )
    expect_answers: list[str] = Field(
        default_factory=list,
        description="Records that must all be in the answer section, in zone-file text form"
        " ('10.1.2.3', '10 mail.chu.local.', '0 5 2575 hl7.chu.local.'); case and trailing dots"
        " are ignored.",
    )

    @field_validator("query_name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        """Reject a name DNS cannot carry."""
        try:
            dns.name.from_text(value)
        except dns.exception.DNSException as exc:
            raise ValueError(f"not a valid DNS name: {exc}") from None
        return value

    @model_validator(mode="after")
    def _expectations_need_answers(self) -> Self:
        """Reject expected answers with valid rcodes that cannot carry them."""
        if self.expect_answers and "NOERROR" not in self.valid_rcodes:
            raise ValueError("expect_answers needs NOERROR in valid_rcodes")
        return self

    def question(self) -> dns.name.Name:
        """Return the name asked: the reverse name for a PTR query of an IP address."""
        if self.query_type == "PTR":
            try:
                return dns.reversename.from_address(self.query_name)
            except (ValueError, dns.exception.SyntaxError):
                pass
        return dns.name.from_text(self.query_name)


def _gauge(name: str, value: float, help: str, labels: tuple[tuple[str, str], ...] = ()) -> Sample:
    """Return a gauge sample."""
    return Sample(name=name, value=value, labels=labels, type="gauge", help=help)


def _rcode_samples(rcode: str | None) -> list[Sample]:
    """Return the dns_rcode state set: 1 for the rcode received, 0 for the others."""
    return [
        _gauge(
            "dns_rcode",
            1.0 if name == rcode else 0.0,
            "1 for the response code of the last answer, 0 for the others.",
            (("rcode", name),),
        )
        for name in RCODES
    ]


class DnsProbe(HostPortTarget):
    """Probe kind "dns": one query to the server named by the target, answer checked.

    The target is the server, `host[:port]`, port 53 by default, IPv6 as `[addr]:port`.
    """

    kind: ClassVar[str] = "dns"
    Settings: ClassVar[type[BaseModel]] = DnsSettings
    default_port: ClassVar[int | None] = _DEFAULT_PORT

    async def __call__(self, check: Check[DnsSettings], ctx: ProbeContext) -> ProbeResult:
        """Ask the question, check the rcode and answers, report."""
        settings = check.settings
        host, port = split_host_port(check.target, _DEFAULT_PORT)
        samples: list[Sample] = []
        phases: list[tuple[str, float]] = []
        rcode: str | None = None
        error: str | None
        try:
            address = await _address(host)
        except socket.gaierror as exc:
            error = f"DNS: cannot resolve the server {host!r}: {exc.strerror}"
        except OSError as exc:
            error = f"DNS: cannot resolve the server {host!r}: {os_error_reason(exc)}"
        else:
            error, rcode = await self._ask(
                check, settings, address, port, ctx=ctx, samples=samples, phases=phases
            )
        samples.extend(_rcode_samples(rcode))
        if error is not None:
            error = bound_text(error)
            ctx.log("dns_failed", error=error)
            return ProbeResult(
                success=False, error=error, samples=tuple(samples), phases=tuple(phases)
            )
        return ProbeResult(success=True, samples=tuple(samples), phases=tuple(phases))

    @staticmethod
    async def _ask(
        check: Check,
        settings: DnsSettings,
        address: str,
        port: int,
        *,
        ctx: ProbeContext,
        samples: list[Sample],
        phases: list[tuple[str, float]],
    ) -> tuple[str | None, str | None]:
        """Send the query; return (failure reason or None, rcode name or None)."""
        query = dns.message.make_query(
            settings.question(), dns.rdatatype.from_text(settings.query_type)
        )
        if not settings.recursion_desired:
            query.flags &= ~dns.flags.RD
        timeout = check.timeout * _OWN_DEADLINE_SHARE
        ctx.log("dns_query", server=check.target, name=str(query.question[0].name))
        start = time.monotonic()
        used_tcp = settings.transport == "tcp"
        over = "" if used_tcp else " (UDP)"
        try:
            if not used_tcp:
                try:
                    answer = await dns.asyncquery.udp(
                        query, address, timeout=timeout, port=port, raise_on_truncation=True
                    )
                except dns.message.Truncated:
                    ctx.log("dns_truncated_retry_tcp")
                    used_tcp = True
                    over = " (TCP, after a truncated UDP answer)"
            if used_tcp:
                left = max(0.0, timeout - (time.monotonic() - start))
                answer = await dns.asyncquery.tcp(query, address, timeout=left, port=port)
        except dns.exception.Timeout:
            return f"timeout after {timeout:.3g}s: no answer from {check.target}{over}", None
        except (dns.exception.DNSException, EOFError, ValueError) as exc:
            detail = sanitise(str(exc), 200) or type(exc).__name__
            return f"protocol error: bad answer from {check.target}{over}: {detail}", None
        except OSError as exc:
            return f"query to {check.target}{over} failed: {os_error_reason(exc)}", None
        lookup = time.monotonic() - start
        phases.append(("lookup", lookup))
        qtype = query.question[0].rdtype
        records = [
            rdata.to_text() for rrset in answer.answer if rrset.rdtype == qtype for rdata in rrset
        ]
        samples += [
            _gauge("dns_lookup_seconds", lookup, "Seconds from sending the query to its answer."),
            _gauge(
                "dns_answer_rrs",
                len(records),
                "Records of the type asked in the answer section.",
            ),
            _gauge("dns_used_tcp", 1.0 if used_tcp else 0.0, "1 if the answer came over TCP."),
        ]
        rcode = dns.rcode.to_text(answer.rcode())
        ctx.log("dns_answer", rcode=rcode, answers=len(records), tcp=used_tcp)
        if rcode not in settings.valid_rcodes:
            return f"rcode {rcode}, expected {' or '.join(settings.valid_rcodes)}", rcode
        if rcode != "NOERROR":
            return None, rcode
        if len(records) < settings.min_answers:
            return (
                f"{len(records)} {settings.query_type} record(s) in the answer,"
                f" expected at least {settings.min_answers}",
                rcode,
            )
        got = {_normalise_answer(r) for r in records}
        missing = [a for a in settings.expect_answers if _normalise_answer(a) not in got]
        if missing:
            shown = ", ".join(sanitise(r, 80) for r in records[:_SHOWN_ANSWERS])
            more = (
                f" and {len(records) - _SHOWN_ANSWERS} more"
                if len(records) > _SHOWN_ANSWERS
                else ""
            )
            return f"answer lacks {', '.join(missing)}; got {shown or 'nothing'}{more}", rcode
        return None, rcode


async def _address(host: str) -> str:
    """Return host as an IP address, resolving a name with the system resolver."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"no address for {host}")
    return str(infos[0][4][0])
