"""The probe side of the trap receiver: what a decoder and a check's meanings must offer."""

from __future__ import annotations

import pytest

from tests.snmp_peers import snmp_check
from vigie.probes.snmp import SnmpProbe
from vigie.probes.traps import TrapProbe, TrapSource, normalise_ip


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),  # an IPv4 sender seen on a dual-stack socket
        ("fe80::1%eth0", "fe80::1"),  # the scope is not part of the device's address
        ("2001:DB8::1", "2001:db8::1"),
        ("ups.example", "ups.example"),  # not an address: kept as it is
    ],
)
def test_normalise_ip(text: str, normal: str) -> None:
    """Addresses compare in one form whatever socket family received them."""
    assert normalise_ip(text) == normal


def test_snmp_is_a_trap_probe_and_its_checks_say_what_traps_mean() -> None:
    """The snmp probe gives the receiver a decoder; a check's profiles give trap meanings."""
    assert isinstance(SnmpProbe(), TrapProbe)
    check = snmp_check("127.0.0.1:161", profiles=("system", "ups-mib"))
    assert isinstance(check.settings, TrapSource)
    on_battery = check.settings.trap_meanings()["1.3.6.1.2.1.33.2.0.1"]
    assert on_battery.name == "upsTrapOnBattery"
    assert on_battery.set == {"ups_on_battery": 1.0}
    assert check.settings.family_helps()["ups_on_battery"]
