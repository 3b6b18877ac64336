"""Prometheus metrics. One registry per app, so several apps can live in one process (tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "geofence_http_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "geofence_http_request_seconds",
            "Time to answer an HTTP request",
            ["route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.refused = Counter(
            "geofence_requests_refused",
            "Requests refused before handling: rate-limited (429), overloaded (503), client-abort",
            ["reason"],
            registry=r,
        )
        self.pings = Counter(
            "geofence_pings",
            "Pings screened, by status and reason",
            ["status", "reason"],
            registry=r,
        )
        self.events = Counter(
            "geofence_visit_events", "Visit events emitted", ["type", "reason"], registry=r
        )
        self.suppressed_entries = Counter(
            "geofence_entries_suppressed", "Entries suppressed by the entry cooldown", registry=r
        )
        self.state_conflicts = Counter(
            "geofence_state_conflicts", "Compare-and-set retries on device state", registry=r
        )
        self.fences = Gauge("geofence_fences", "Fences in the loaded index", registry=r)
        self.index_cells = Gauge("geofence_index_cells", "H3 cells in the loaded index", registry=r)
        self.catalogue_version = Gauge(
            "geofence_catalogue_version", "Version of the loaded catalogue", registry=r
        )
        self.notifications = Counter(
            "geofence_notifications", "Notifications created", ["offer_id"], registry=r
        )
        self.deliveries = Counter(
            "geofence_deliveries", "Notifications the push gateway accepted", registry=r
        )
        self.delivery_retries = Counter(
            "geofence_delivery_retries",
            "Deliveries scheduled again, by cause",
            ["cause"],
            registry=r,
        )
        self.dead_letters = Counter(
            "geofence_dead_letters",
            "Notifications dead-lettered, by reason",
            ["reason"],
            registry=r,
        )
        self.delivery_latency = Histogram(
            "geofence_delivery_seconds",
            "From a notification's creation to the gateway's acceptance",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
        )
        self.outbox_depth = Gauge(
            "geofence_outbox_depth", "Notifications waiting in the outbox", registry=r
        )
        self.receipts = Counter(
            "geofence_receipts", "Receipts counted, by event", ["event"], registry=r
        )
        self._answers: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def answered(self, route: str, status: int, seconds: float) -> None:
        """One HTTP request answered. The labelled series of each (route, status) are
        looked up once: every request passes here."""
        series = self._answers.get((route, status))
        if series is None:
            series = (self.requests.labels(route, str(status)), self.latency.labels(route))
            self._answers[route, status] = series
        requests, latency = series
        requests.inc()
        latency.observe(seconds)
