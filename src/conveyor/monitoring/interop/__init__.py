"""Interop with Prometheus and Grafana: rules and a dashboard generated from the spec.

:func:`prometheus.rules_yaml` (recording rules per monitor, alerting rules translated
from Conveyor's own alert rules), :func:`grafana.dashboard`,
:func:`alertmanager.alertmanager_yaml` (grouping, repeat and inhibition as Conveyor's),
and :mod:`exporter` (``GET /v1/monitor/metrics``: the event-log monitors as series); the
names they share with Conveyor's monitors are in :mod:`conveyor.monitoring.interop.names`.
"""
