"""Vigie: infrastructure health monitoring daemon for hospital datacenters."""

__version__ = "0.1.0"
