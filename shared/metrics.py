"""Prometheus metrics every service shares, on a registry of its own (no global state at import)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BusMetrics:
    """The event backbone's figures: published, handled, dead-lettered, retried, and batch timings."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "obsflow_events_published_total", "Events the outbox relay published, by type", ["type"],
            registry=registry,
        )
        self.outbox_pending = Gauge(
            "obsflow_outbox_pending_events", "Events committed but not yet confirmed by the broker",
            registry=registry,
        )
        self.handled = Counter(
            "obsflow_events_handled_total", "Events a consumer applied, by consumer and type", ["consumer", "type"],
            registry=registry,
        )
        self.duplicates = Counter(
            "obsflow_events_duplicate_total", "Events skipped because their id was already handled", ["consumer"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "obsflow_events_dead_lettered_total", "Messages that can never succeed, by consumer and error class",
            ["consumer", "error"], registry=registry,
        )
        self.retried = Counter(
            "obsflow_events_retried_total", "Transient failures retried, by consumer and error class",
            ["consumer", "error"], registry=registry,
        )
        self.batch_seconds = Histogram(
            "obsflow_consumer_batch_seconds", "Time to apply and commit one batch of events", ["consumer"],
            registry=registry, buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
        )
        self.stream_offset = Gauge(
            "obsflow_stream_checkpoint_offset", "Last stream offset a consumer committed", ["consumer"],
            registry=registry,
        )


class ServiceMetrics:
    """A service's registry with the bus metrics on it; services add their own metrics to `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.bus = BusMetrics(self.registry)
        self.errors = Counter(
            "obsflow_errors_total", "Errors by class, wherever they were handled", ["error"], registry=self.registry
        )
