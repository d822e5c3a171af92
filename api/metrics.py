"""Prometheus metrics of one service process (registries of its own, not the global one).

The series labelled with client key ids (`linetwin_ack_age_seconds`, `linetwin_client_silent`)
are in a registry of their own, `Metrics.clients`: `/metrics` shows them only to a caller with
a key that may read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from linetwin.api.storage import AckRecord, StorageError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _AckAges(Collector):
    """`linetwin_ack_age_seconds{client}`: seconds since each client's last acknowledgement;
    `linetwin_client_silent{client}`: 1 when that age exceeds `silent_after_s`, else 0. The
    labels are API key ids: shown only to a caller with a key (`Metrics.render`)."""

    def __init__(self, acks: Callable[[], list[AckRecord]], silent_after_s: float) -> None:
        self._acks = acks
        self.silent_after_s = silent_after_s

    def records(self) -> list[AckRecord]:
        try:
            return self._acks()
        except StorageError:  # closed or unreadable storage: no samples, not a failed scrape
            return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "linetwin_ack_age_seconds",
            "Seconds since the client's last acknowledgement.",
            labels=["client"],
        )
        silent = GaugeMetricFamily(
            "linetwin_client_silent",
            "1 when the client's last acknowledgement is older than the silence threshold.",
            labels=["client"],
        )
        for r in self.records():
            family.add_metric([r.client], r.age_s)
            silent.add_metric([r.client], float(r.age_s > self.silent_after_s))
        yield family
        yield silent


class _SilentCount(Collector):
    """`linetwin_silent_clients`: how many clients are silent (no labels: shown to anyone)."""

    def __init__(self, ages: _AckAges) -> None:
        self._ages = ages

    def collect(self) -> Iterable[GaugeMetricFamily]:
        limit = self._ages.silent_after_s
        yield GaugeMetricFamily(
            "linetwin_silent_clients",
            "Clients whose last acknowledgement is older than the silence threshold.",
            value=float(sum(r.age_s > limit for r in self._ages.records())),
        )


class Metrics:
    """The counters, gauges and histograms of the service."""

    def __init__(self, acks: Callable[[], list[AckRecord]], silent_after_s: float = 60.0) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.cycles = Counter("linetwin_cycles", "Controller cycles run.", registry=r)
        self.cycle_errors = Counter(
            "linetwin_cycle_errors", "Controller cycles that raised.", registry=r
        )
        self.cycle_seconds = Histogram(
            "linetwin_cycle_seconds",
            "Wall seconds per controller cycle.",
            buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.fallbacks = Counter(
            "linetwin_fallbacks",
            "Decisions that held last-known-good, by reason.",
            ["reason"],
            registry=r,
        )
        self.solve_status = Counter(
            "linetwin_solve_status", "Decisions by solve status.", ["status"], registry=r
        )
        self.version = Gauge(
            "linetwin_decision_version", "Version of the published decision.", registry=r
        )
        self.polls = Counter("linetwin_setpoint_polls", "GET /v1/setpoints requests.", registry=r)
        self.not_modified = Counter(
            "linetwin_setpoint_not_modified", "GET /v1/setpoints answered 304.", registry=r
        )
        self.acks = Counter("linetwin_acks", "Acknowledgements stored.", registry=r)
        self.rate_limited = Counter(
            "linetwin_rate_limited", "Requests answered 429 (rate limit per key).", registry=r
        )
        self.sse_clients = Gauge(
            "linetwin_state_stream_clients", "Open /v1/state/stream connections.", registry=r
        )
        ages = _AckAges(acks, silent_after_s)
        r.register(_SilentCount(ages))
        self.clients = CollectorRegistry()
        self.clients.register(ages)

    def render(self, clients: bool = True) -> bytes:
        """The Prometheus text exposition of every metric; without `clients`, leave out the
        series labelled with client key ids."""
        text = generate_latest(self.registry)
        return text + generate_latest(self.clients) if clients else text
