"""Probe kinds; `default_registry` lists the ones Vigie ships."""

from probes.base import Check, Probe, ProbeContext, ProbeLog, ProbeRegistry

__all__ = ["Check", "Probe", "ProbeContext", "ProbeLog", "ProbeRegistry", "default_registry"]


def default_registry() -> ProbeRegistry:
    """Return a registry holding every shipped probe kind."""
    from probes.dicom import DicomProbe
    from probes.dns import DnsProbe
    from probes.exporter import ExporterProbe
    from probes.hl7 import Hl7Probe
    from probes.http import HttpProbe
    from probes.nagios import NagiosProbe
    from probes.redfish import RedfishProbe
    from probes.snmp import SnmpProbe
    from probes.ssh import SshProbe
    from probes.tcp import TcpProbe

    return ProbeRegistry(
        [
            DicomProbe(),
            DnsProbe(),
            ExporterProbe(),
            Hl7Probe(),
            HttpProbe(),
            NagiosProbe(),
            RedfishProbe(),
            SnmpProbe(),
            SshProbe(),
            TcpProbe(),
        ]
    )
