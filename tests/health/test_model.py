"""The topology model: dependency order, dependents, site membership, power and at-risk apps."""

from __future__ import annotations

from vigie.monitor.health.model import Topology
from vigie.monitor.health.topology import AnyOf, ComponentSpec, SiteSpec

SITES = [
    SiteSpec(id="nord", name="Datacenter Nord"),
    SiteSpec(id="nord-1", parent="nord"),
    SiteSpec(id="sud"),
]


def comp(cid: str, kind: str, site: str, **extra: object) -> ComponentSpec:
    """Return a component spec (validated as the config does)."""
    return ComponentSpec.model_validate({"id": cid, "kind": kind, "site": site, **extra})


def topology() -> Topology:
    """A datacenter with a room (A/B UPS, a server), an app spread over two datacenters."""
    return Topology(
        SITES,
        [
            comp("app", "application", "nord", depends_on=[{"any_of": ["srv", "srv-sud"]}]),
            comp("srv", "server", "nord-1", powered_by=["ups-a", "ups-b"]),
            comp("ups-a", "ups", "nord-1"),
            comp("ups-b", "ups", "nord-1"),
            comp("pdu", "pdu", "nord-1", powered_by=["ups-a"]),
            comp("srv-sud", "server", "sud"),
        ],
    )


def test_order_puts_dependencies_first() -> None:
    """Every component comes after what it depends on; index gives each one's position."""
    topo = topology()
    pos = topo.index
    assert pos["ups-a"] < pos["srv"] and pos["ups-b"] < pos["srv"]
    assert pos["srv"] < pos["app"] and pos["srv-sud"] < pos["app"]
    assert [topo.order[i] for i in sorted(pos.values())] == topo.order


def test_plain_feeds_are_one_redundancy_group() -> None:
    """Two plain power feeds need one healthy: one group of two, need 1."""
    topo = topology()
    assert topo.groups["srv"] == [(("ups-a", "ups-b"), 1)]
    assert isinstance(topo.deps["srv"][0], AnyOf)


def test_dependents_and_redundancy() -> None:
    """A UPS behind an A/B pair only is redundant; a PDU's single feed is not."""
    topo = topology()
    assert sorted(topo.dependents["ups-a"]) == ["pdu", "srv"]
    assert not topo.redundant_only("ups-a")  # the PDU has it as its only feed
    assert topo.redundant_only("ups-b")
    assert not topo.redundant_only("app")  # nothing depends on it


def test_sites_rooms_and_members() -> None:
    """A room's components are its datacenter's too; power devices and UPS are indexed."""
    topo = topology()
    assert topo.datacenters == ["nord", "sud"] and topo.rooms == ["nord-1"]
    assert topo.datacenter("nord-1") == "nord" and topo.dc["srv"] == "nord"
    assert sorted(topo.site_members("nord")) == ["app", "pdu", "srv", "ups-a", "ups-b"]
    assert sorted(topo.site_members("nord-1")) == ["pdu", "srv", "ups-a", "ups-b"]
    assert topo.ups["nord-1"] == ["ups-a", "ups-b"] and topo.ups["sud"] == []
    assert sorted(topo.power_members["nord"]) == ["pdu", "ups-a", "ups-b"]
    assert topo.site_name("nord") == "Datacenter Nord" and topo.site_name("sud") == "sud"


def test_at_risk_follows_dependencies_across_datacenters() -> None:
    """An application is at risk at every datacenter it reaches through its dependencies."""
    topo = topology()
    assert topo.at_risk["nord"] == ["app"]
    assert topo.at_risk["sud"] == ["app"]
