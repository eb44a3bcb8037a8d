"""Probe kinds; `default_registry` lists the ones Vigie ships."""

from vigie.probes.base import Check, Probe, ProbeContext, ProbeLog, ProbeRegistry

__all__ = ["Check", "Probe", "ProbeContext", "ProbeLog", "ProbeRegistry", "default_registry"]


def default_registry() -> ProbeRegistry:
    """Return a registry holding every shipped probe kind."""
    from vigie.probes.dicom import DicomProbe
    from vigie.probes.dns import DnsProbe
    from vigie.probes.exporter import ExporterProbe
    from vigie.probes.fhir import FhirProbe
    from vigie.probes.hl7 import Hl7Probe
    from vigie.probes.http import HttpProbe
    from vigie.probes.icmp import IcmpProbe
    from vigie.probes.imap import ImapProbe
    from vigie.probes.ldap import LdapProbe
    from vigie.probes.nagios import NagiosProbe
    from vigie.probes.redfish import RedfishProbe
    from vigie.probes.sip import SipProbe
    from vigie.probes.smtp import SmtpProbe
    from vigie.probes.snmp import SnmpProbe
    from vigie.probes.ssh import SshProbe
    from vigie.probes.tcp import TcpProbe
    from vigie.probes.vigie_peer import VigiePeerProbe

    return ProbeRegistry(
        [
            DicomProbe(),
            DnsProbe(),
            ExporterProbe(),
            FhirProbe(),
            Hl7Probe(),
            HttpProbe(),
            IcmpProbe(),
            ImapProbe(),
            LdapProbe(),
            NagiosProbe(),
            RedfishProbe(),
            SipProbe(),
            SmtpProbe(),
            SnmpProbe(),
            SshProbe(),
            TcpProbe(),
            VigiePeerProbe(),
        ]
    )
