"""The daemon's own cost as every exporter shows it: process, Python platform and GC metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def register_runtime_collectors(registry: CollectorRegistry) -> None:
    """Register client_python's process, platform and GC collectors on the daemon's registry.

    They read /proc/self and gc.get_stats() at scrape time only, so probes pay nothing for them;
    process_cpu_seconds_total over vigie_probes_total is the daemon's CPU per probe.
    """
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


def runtime_metric_names() -> set[str]:
    """Return the family names the runtime collectors expose here (for checks of deploy/)."""
    registry = CollectorRegistry()
    register_runtime_collectors(registry)
    return {family.name for family in registry.collect()}
