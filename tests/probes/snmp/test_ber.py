"""The minimal BER codec: what it encodes it decodes, lengths of every size, truncation refused."""

from __future__ import annotations

import pytest

from vigie.probes.snmp.ber import (
    ber_decode_int,
    ber_decode_oid,
    ber_int,
    ber_items,
    ber_oid,
    ber_seq,
    ber_tlv,
)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 256, -1, -128, -129, 2**31 - 1, 2**63])
def test_integers_round_trip(value: int) -> None:
    """INTEGER bodies are two's complement, as short as the value allows."""
    ((tag, body),) = ber_items(ber_int(value))
    assert (tag, ber_decode_int(body)) == (0x02, value)


@pytest.mark.parametrize(
    "oid", ["1.3.6.1.2.1.1.3.0", "1.3.6.1.4.1.318.1.1.1.2.2.1.0", "2.999.3", "0.0"]
)
def test_oids_round_trip(oid: str) -> None:
    """Sub-identifiers over 127 take several octets; the first two arcs share one."""
    ((tag, body),) = ber_items(ber_oid(oid))
    assert (tag, ber_decode_oid(body)) == (0x06, oid)


@pytest.mark.parametrize("size", [0, 127, 128, 255, 256, 70_000])
def test_lengths_short_and_long_form(size: int) -> None:
    """Bodies under 128 octets use the short length form, longer ones the long form."""
    encoded = ber_tlv(0x04, b"x" * size)
    assert (len(encoded) == 2 + size) if size < 128 else (len(encoded) > 2 + size)
    assert ber_items(encoded) == [(0x04, b"x" * size)]


def test_a_sequence_holds_its_items_in_order() -> None:
    """A SEQUENCE (or a PDU with its own tag) decodes to the items it was built from."""
    pdu = ber_seq(ber_int(7), ber_tlv(0x04, b"public"), ber_seq(), tag=0xA0)
    ((tag, body),) = ber_items(pdu)
    assert tag == 0xA0
    assert ber_items(body) == [(0x02, b"\x07"), (0x04, b"public"), (0x30, b"")]


@pytest.mark.parametrize("data", [b"\x30", b"\x04\x05abc", b"\x30\x82\x01\x00\x02"])
def test_truncated_data_is_refused(data: bytes) -> None:
    """A length running past the data is a ValueError, never a short read."""
    with pytest.raises(ValueError, match="truncated BER"):
        ber_items(data)
