"""SNMP's side of the trap receiver: the BER header peek that screens every datagram cheaply."""

from __future__ import annotations

import random
import re

import pytest

from tests.test_traps import COMMUNITY, ON_BATTERY, SENDER_ENGINE_ID, USER, V3_ARGS, capture
from vigie.probes.snmp.traps import peek_header


@pytest.mark.parametrize(
    ("args", "version", "pdu"),
    [
        (
            ["-v1", "-c", COMMUNITY, "{target}", "1.3.6.1.2.1.33.2", "127.0.0.2", "6", "1", ""],
            0,
            0xA4,
        ),
        (["-v2c", "-c", COMMUNITY, "{target}", "", ON_BATTERY], 1, 0xA7),
    ],
    ids=["v1-trap", "v2c-trap"],
)
async def test_header_of_a_real_v1_and_v2c_trap(args: list[str], version: int, pdu: int) -> None:
    """peek_header reads the version, community and PDU type of net-snmp's own datagrams."""
    header = peek_header(await capture(*args))
    assert (header.version, header.community, header.pdu) == (version, COMMUNITY.encode(), pdu)


async def test_header_of_a_real_v3_trap_names_engine_and_user() -> None:
    """peek_header reads an SNMPv3 authPriv trap's engine ID and user (the rest is encrypted)."""
    data = await capture("-e", SENDER_ENGINE_ID, *V3_ARGS, "{target}", "", ON_BATTERY)
    header = peek_header(data)
    assert (header.version, header.engine_id.hex(), header.user) == (
        3,
        SENDER_ENGINE_ID,
        USER.encode(),
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", "truncated before message"),
        (b"\x04\x01x", "message: tag 0x04"),
        (b"\x30\x05\x02\x01\x01", "message: longer than the datagram"),
        (b"\x30\x80\x02\x01\x01\x00\x00", "message: bad length"),
        (b"\x30\x03\x02\x01\x01\xff", "trailing bytes"),
        (b"\x30\x03\x02\x01\x07", "SNMP version 7"),
        (b"\x30\x02\x02\x00", "version: bad integer"),
        (b"\x30\x06\x02\x01\x01\x04\x01c", "truncated before the PDU"),
        (b"\x30\x09\x02\x01\x03\x30\x00\x04\x02\x30\x00", "msgAuthoritativeEngineID"),
    ],
)
def test_header_errors_name_the_field(data: bytes, error: str) -> None:
    """Anything that is not one SNMP message is refused with the field at fault named."""
    with pytest.raises(ValueError, match=re.escape(error)):
        peek_header(data)


async def test_header_parser_survives_mutated_real_datagrams() -> None:
    """20,000 bit flips, truncations and splices of net-snmp's v1, v2c and v3 datagrams:
    peek_header returns a header or raises ValueError, never anything else."""
    seeds = [
        await capture("-v1", "-c", COMMUNITY, "{target}", "1.3.6.1.2.1.33.2", "", "6", "1", ""),
        await capture("-v2c", "-c", COMMUNITY, "{target}", "", ON_BATTERY),
        await capture("-e", SENDER_ENGINE_ID, *V3_ARGS, "{target}", "", ON_BATTERY),
    ]
    rng = random.Random(3584)
    parsed = refused = 0
    for _ in range(20_000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            if op == 0 and data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            elif op == 1:
                del data[rng.randrange(len(data) + 1) :]
            else:
                at = rng.randrange(len(data) + 1)
                data[at:at] = rng.randbytes(rng.randrange(1, 8))
        try:
            peek_header(bytes(data))
            parsed += 1
        except ValueError:
            refused += 1
    assert parsed > 1000 and refused > 1000, (parsed, refused)
