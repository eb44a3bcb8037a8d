"""Probe workers on NATS."""
