"""Sinks of engine events: Prometheus metrics, the HTTP exporter, the call log.

A sink never reaches back into the core (DESIGN.md "Data flow"); it is handed
events and counters by the daemon.
"""
