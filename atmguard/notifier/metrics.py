"""Prometheus metrics of the notifier (prefix `atmguard_notifier_`), created once per registry."""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

# Alerts matter within seconds: buckets from 5 ms to 2 min (acks take minutes, so up to 1 h).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ACK_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600)


class NotifierMetrics(NamedTuple):
    """All notifier metrics; labels: channel = sms | radio | webhook."""

    sent: Counter
    failed: Counter
    retried: Counter
    delivered: Counter
    send_latency: Histogram
    delivery_latency: Histogram
    ack_latency: Histogram
    escalations: Counter
    interventions: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry, prefix: str = "atmguard_notifier") -> NotifierMetrics:
        return cls(
            sent=Counter(f"{prefix}_sent", "Messages, calls and webhook posts accepted by the provider.", ["channel"], registry=registry),
            failed=Counter(f"{prefix}_failed", "Notifications given up on (dead letters).", ["channel"], registry=registry),
            retried=Counter(f"{prefix}_retried", "Retries after a 5xx, a timeout or a failure callback.", ["channel"], registry=registry),
            delivered=Counter(f"{prefix}_delivered", "Delivered SMS, completed calls, accepted webhooks.", ["channel"], registry=registry),
            send_latency=Histogram(
                f"{prefix}_send_latency_seconds", "Intervention received -> provider accepted the request.",
                ["channel"], buckets=LATENCY_BUCKETS, registry=registry,
            ),
            delivery_latency=Histogram(
                f"{prefix}_delivery_latency_seconds", "Intervention received -> delivered (status callback).",
                ["channel"], buckets=LATENCY_BUCKETS, registry=registry,
            ),
            ack_latency=Histogram(
                f"{prefix}_ack_latency_seconds", "Intervention received -> acknowledged.", buckets=ACK_BUCKETS, registry=registry
            ),
            escalations=Counter(f"{prefix}_escalations", "Escalation steps taken.", registry=registry),
            interventions=Counter(
                f"{prefix}_interventions", "Interventions taken in, by mode and outcome (new, duplicate).",
                ["mode", "outcome"], registry=registry,
            ),
        )


_BY_REGISTRY: dict[int, NotifierMetrics] = {}


def notifier_metrics(registry: CollectorRegistry | None = None) -> NotifierMetrics:
    """The metrics on `registry` (default: the process registry served at /metrics)."""
    reg = registry or REGISTRY
    if id(reg) not in _BY_REGISTRY:
        _BY_REGISTRY[id(reg)] = NotifierMetrics.create(reg)
    return _BY_REGISTRY[id(reg)]
