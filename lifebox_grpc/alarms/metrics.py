"""Prometheus metrics of alarm evaluation (served by the ingest worker's metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ALARM_READINGS_EVALUATED = Counter(
    "lifebox_alarm_readings_evaluated_total", "Committed readings run through alarm rules"
)
ALARM_EVENTS = Counter("lifebox_alarm_events_total", "Alarm events raised and cleared", ["change"])
ALARM_BUDGET_EXCEEDED = Counter(
    "lifebox_alarm_budget_exceeded_total",
    "Device evaluations stopped by the CEL time budget (the rest is evaluated next round)",
)
ALARM_EVALUATION_RETRIES = Counter(
    "lifebox_alarm_evaluation_retries_total", "Evaluations retried after a database error"
)
ALARM_EVALUATION_SECONDS = Histogram(
    "lifebox_alarm_evaluation_seconds",
    "One evaluation transaction (lock, read, evaluate, write)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ALARM_SWEEPS = Counter("lifebox_alarm_sweeps_total", "Sweeper passes", ["outcome"])
ALARM_LATE_READINGS = Counter(
    "lifebox_alarm_late_readings_total",
    "Late readings (older than the lateness window when committed, or committed behind "
    "their device's watermark): evaluated on arrival by threshold and expression rules, "
    "skipped by duration, dwell and rate rules",
)
