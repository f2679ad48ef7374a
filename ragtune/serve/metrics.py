"""Prometheus metrics of the server (``GET /metrics``), through the official ``prometheus_client``.

=====================================  =========  ============================================
metric                                 type       labels / meaning
=====================================  =========  ============================================
``ragtune_requests_total``             counter    ``endpoint``, ``method``, ``status``
``ragtune_request_duration_seconds``   histogram  ``endpoint``: wall time from request to response
``ragtune_batch_size``                 histogram  texts per forward pass (server-side batching)
``ragtune_items_total``                counter    ``endpoint``: texts, questions or queries served
=====================================  =========  ============================================

``endpoint`` is the route's path template (``/v1/predict``), or ``other`` for paths the app does
not serve, so a scan of random URLs cannot grow the number of series.

With ``ragtune serve --workers N`` each worker is its own process; the server then sets
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` adds up the counts of all workers
(``prometheus_client``'s multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The metrics of one app, in a registry of its own (two apps in one process do not mix)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ragtune_requests", "HTTP requests by endpoint, method and status code.",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("ragtune_request_duration_seconds", "Time from request to response.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("ragtune_batch_size", "Texts per forward pass (server-side batching).",
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.items = Counter("ragtune_items", "Texts, questions or queries served, by endpoint.",
                             ["endpoint"], registry=self.registry)

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self) -> bytes:
        """The text exposition format; across all workers in multiprocess mode."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
