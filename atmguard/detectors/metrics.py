"""Prometheus metrics of the detectors (prefix atmguard_), one typed object as faust's FaustMetrics."""

from __future__ import annotations

from typing import NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

# model calls take 5 to 60 ms on a CPU core; finer buckets there than the default ones
MS_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0)


class DetectorMetrics(NamedTuple):
    frames_read: Counter
    frames_analysed: Counter
    frames_dropped: Counter
    frames_gated: Counter
    model_latency: Histogram
    facts_emitted: Counter
    stream_reconnects: Counter
    frame_to_fact: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry, prefix: str = "atmguard_") -> DetectorMetrics:
        return cls(
            frames_read=Counter(f"{prefix}frames_read", "Frames read from camera sources.", ["camera"], registry=registry),
            frames_analysed=Counter(f"{prefix}frames_analysed", "Frames the models ran on.", ["camera"], registry=registry),
            frames_dropped=Counter(f"{prefix}frames_dropped", "Frames skipped (newest frame wins, or above the analysis rate).", ["camera"], registry=registry),
            frames_gated=Counter(f"{prefix}frames_gated", "Frames due for analysis but skipped: no motion, nobody there.", ["camera"], registry=registry),
            model_latency=Histogram(f"{prefix}model_latency_seconds", "Inference time per model call.", ["model"], registry=registry, buckets=MS_BUCKETS),
            facts_emitted=Counter(f"{prefix}facts_emitted", "Behaviour facts emitted.", ["camera", "behavior"], registry=registry),
            stream_reconnects=Counter(f"{prefix}stream_reconnects", "Stream reconnections.", ["camera"], registry=registry),
            frame_to_fact=Histogram(f"{prefix}frame_to_fact_seconds", "Lag from frame captured to fact emitted.", registry=registry, buckets=MS_BUCKETS),
        )


_default: DetectorMetrics | None = None


def default_metrics() -> DetectorMetrics:
    """The process-wide metrics on prometheus_client's default registry (created once)."""
    global _default
    if _default is None:
        _default = DetectorMetrics.create(REGISTRY)
    return _default
