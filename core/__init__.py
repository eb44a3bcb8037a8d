"""The shared base: what probes and the daemon both stand on, importing neither.

Results and samples, secrets, durations, the positioned YAML loader, rule expressions and
severities, host:port parsing and the sanitiser of untrusted text.
"""
