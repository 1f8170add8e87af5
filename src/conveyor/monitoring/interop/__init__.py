"""Interop with Prometheus and Grafana: rules and a dashboard generated from the spec.

:func:`prometheus.rules_document` (recording rules per monitor, alerting rules translated
from Conveyor's own alert rules) and :func:`grafana.dashboard`; the names they share with
Conveyor's monitors are in :mod:`conveyor.monitoring.interop.names`.
"""
