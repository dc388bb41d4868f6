"""The hub's metrics: one registry snapshot, read as Prometheus series and as W&B scalars.

The socket loop takes a snapshot of the fleet registry every ``registry_every_s`` (fleet/hub.py) and hands it
to :meth:`HubMetrics.publish`; the Prometheus endpoint (an HTTP server thread of ``prometheus_client``) and the
W&B reporter (fleet/metrics_wandb.py) only ever read the latest snapshot, so neither touches the loop's state
and a slow scraper cannot slow ingest. Store commit times come straight from the group writer's thread
(:class:`CommitTimer`). Names and meanings: docs/observability.md.

Bounded under robot churn: per-robot series exist only for robots in the registry (a robot gone for
``forget_after_s`` is forgotten, its series vanish and its counts stay in the hub-wide totals), and at most
``metrics.max_robot_series`` robots get them (the most recently heard; ``fleet_hub_robot_series_dropped`` says
how many did not).
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from fleet.metrics_config import MetricsConfig
from fleet.registry import ALIVE, DEAD

log = logging.getLogger(__name__)

PREFIX = "fleet_hub_"
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

# Hub-wide numbers: key -> (kind, help). The same keys are W&B's (as hub/<key>) and Prometheus's (fleet_hub_<key>,
# counters with _total appended).
HUB_WIDE: dict[str, tuple[str, str]] = {
    "robots_known": ("gauge", "Robots in the registry (connected or not, not yet forgotten)."),
    "robots_connected": ("gauge", "Robots with a live, welcomed connection."),
    "robots_dead": ("gauge", "Robots declared dead after dead_after_heartbeats missed heartbeats."),
    "robots_forgotten": ("counter", "Robots dropped from the registry after forget_after_s gone."),
    "chunks_stored": ("counter", "Chunks stored for the first time since the hub started."),
    "bytes_stored": ("counter", "Record bytes of those chunks."),
    "duplicates": ("counter", "Resends of stored chunks, acked again and stored once."),
    "chunks_acked": ("counter", "Chunks acked (stored + duplicates)."),
    "nacks": ("counter", "Chunks refused with a NACK (any reason)."),
    "refusals": ("counter", "Messages refused (NACK, ERROR or cut), any code."),
    "acks_dropped": ("counter", "ACKs a robot's full queue could not take (it resends; the hub dedupes)."),
    "credit_in_use_bytes": ("gauge", "Chunk bytes queued to the store and not yet acked, all robots."),
    "spool_chunks": ("gauge", "Chunks waiting in the spools of connected robots, as they last reported."),
    "store_pending_chunks": ("gauge", "Chunks queued to the group writer, not yet committed."),
    "store_commit_groups": ("counter", "Commit groups (transactions, one fsync each)."),
    "parquet_chunks_behind": ("gauge", "Stored chunks not yet in a closed Parquet file."),
    "parquet_behind_seconds": ("gauge", "Age of the oldest stored chunk not yet in a closed Parquet file."),
    "parquet_rows_exported": ("counter", "Transitions in the Parquet tier's closed files."),
    "parquet_export_failures": ("counter", "Times the Parquet export failed and was restarted."),
}
# Per-robot numbers: registry field -> (name, kind, help, scale)
PER_ROBOT: dict[str, tuple[str, str, str, float]] = {
    "chunks_in": ("robot_chunks_stored", "counter", "Chunks of this robot stored for the first time.", 1),
    "bytes_in": ("robot_bytes_stored", "counter", "Record bytes of those chunks.", 1),
    "duplicates": ("robot_duplicates", "counter", "Resends of its stored chunks.", 1),
    "nacks": ("robot_nacks", "counter", "Its chunks refused with a NACK.", 1),
    "errors": ("robot_errors", "counter", "Its messages refused with an ERROR.", 1),
    "rtt_ms": ("robot_rtt_seconds", "gauge", "Round-trip time from its echo of the hub's heartbeat.", 1e-3),
    "heartbeat_age_s": ("robot_heartbeat_age_seconds", "gauge", "Seconds since its last heartbeat.", 1),
    "lag_s": ("robot_lag_seconds", "gauge", "Seconds since its newest chunk was stored.", 1),
    "spool_depth": ("robot_spool_chunks", "gauge", "Chunks in its spool, as it last reported.", 1),
    "spool_bytes": ("robot_spool_bytes", "gauge", "Bytes in its spool, as it last reported.", 1),
    "in_flight_bytes": ("robot_credit_in_use_bytes", "gauge", "Its chunk bytes queued and not yet acked.", 1),
    "credit": ("robot_credit_bytes", "gauge", "The byte credit it was last told (its share of the hub's budget).", 1),
    "credit_enforced": ("robot_credit_enforced_bytes", "gauge",
                        "The most credit granted on its connection: chunks sent under it are still taken.", 1),
    "trunk_version": ("robot_trunk_version", "gauge", "The trunk version it last reported.", 1),
    "adapter_version": ("robot_adapter_version", "gauge", "The adapter version it last reported.", 1),
}


class CommitTimer:
    """Durations of the store's commit groups (thread-safe: the group writer's thread observes, readers read)."""

    def __init__(self, buckets: tuple[float, ...] = COMMIT_BUCKETS_S):
        self.buckets = buckets
        self._lock = threading.Lock()
        self._counts = [0] * (len(buckets) + 1)  # the last: above every bucket
        self.count, self.sum_s, self.max_s = 0, 0.0, 0.0

    def observe(self, records: int, seconds: float) -> None:
        """One commit group of ``records`` took ``seconds`` (GroupWriter's ``on_commit``)."""
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, seconds)] += 1
            self.count += 1
            self.sum_s += seconds
            self.max_s = max(self.max_s, seconds)

    def summary(self, buckets: bool = True) -> dict[str, Any]:
        """count, sum_s, max_s, and (``buckets``) cumulative bucket counts: [upper bound, groups at or under it]."""
        with self._lock:
            counts, total, cum = list(self._counts), (self.count, self.sum_s, self.max_s), 0
        out: dict[str, Any] = {"count": total[0], "sum_s": round(total[1], 6), "max_s": round(total[2], 6)}
        if buckets:
            out["buckets"] = []
            for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
                cum += n
                out["buckets"].append((bound, cum))
        return out


def hub_wide(snapshot: dict[str, Any]) -> dict[str, float]:
    """The hub-wide numbers (``HUB_WIDE``'s keys) of a registry snapshot, forgotten robots' counts included."""
    hub, robots, gone = snapshot.get("hub", {}), list(snapshot["robots"].values()), snapshot.get("forgotten", {})

    def total(key: str) -> int:
        return gone.get(key, 0) + sum(r.get(key) or 0 for r in robots)

    parquet = hub.get("parquet") or {}
    out = {
        "robots_known": len(robots),
        "robots_connected": sum(r.get("state") == ALIVE for r in robots),
        "robots_dead": sum(r.get("state") == DEAD for r in robots),
        "robots_forgotten": gone.get("robots", 0),
        "chunks_stored": total("chunks_in"), "bytes_stored": total("bytes_in"), "duplicates": total("duplicates"),
        "nacks": sum((hub.get("nacked") or {}).values()), "refusals": sum((hub.get("refused") or {}).values()),
        "acks_dropped": hub.get("acks_dropped", 0),
        "credit_in_use_bytes": sum(r.get("in_flight_bytes") or 0 for r in robots),
        "spool_chunks": sum(r.get("spool_depth") or 0 for r in robots if r.get("state") == ALIVE),
        "store_pending_chunks": hub.get("writer_pending", 0),
        "store_commit_groups": (hub.get("commit") or {}).get("count", 0),
        "parquet_chunks_behind": parquet.get("chunks_behind", 0),
        "parquet_behind_seconds": parquet.get("behind_s", 0.0),
        "parquet_rows_exported": parquet.get("rows_exported", 0),
        "parquet_export_failures": parquet.get("failures", 0),
    }
    out["chunks_acked"] = out["chunks_stored"] + out["duplicates"]
    return {k: float(out[k]) for k in HUB_WIDE}


class HubMetrics:
    """The latest registry snapshot and the commit timer, served on Prometheus (``prometheus_port`` > 0) from a
    collector registry of this hub's own (two hubs in one process do not mix)."""

    def __init__(self, cfg: MetricsConfig):
        self.cfg = cfg
        self.commits = CommitTimer()
        self.snapshot: dict[str, Any] = {"hub": {}, "robots": {}}  # replaced whole, never mutated: readers' copy
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._server: Any = None
        self.url = ""
        if cfg.prometheus_port:
            from prometheus_client import start_http_server

            try:
                self._server, _ = start_http_server(cfg.prometheus_port, cfg.prometheus_addr, self.registry)
            except OSError as exc:
                raise ValueError(f"metrics.prometheus_port: cannot serve on {cfg.prometheus_addr}:"
                                 f"{cfg.prometheus_port}: {exc}") from exc
            host, port = self._server.server_address[:2]
            self.url = f"http://{host}:{port}/metrics"
            log.info("Prometheus metrics on %s", self.url)

    def publish(self, snapshot: dict[str, Any]) -> None:
        """Make ``snapshot`` (a registry snapshot the caller no longer changes) the one readers see."""
        self.snapshot = snapshot

    def close(self) -> None:
        """Stop the HTTP server."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- prometheus_client Collector -----------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        """The series of the latest snapshot (called by prometheus_client at each scrape, on its thread)."""
        snap = self.snapshot
        hub = snap.get("hub", {})
        for key, value in hub_wide(snap).items():
            kind, text = HUB_WIDE[key]
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(PREFIX + key, text, value=value)
        yield from self._by_code("nacks_by_reason", "Chunks refused with a NACK, by reason.", "reason",
                                 hub.get("nacked"))
        yield from self._by_code("refusals_by_code", "Messages refused, by code.", "code", hub.get("refused"))
        c = self.commits.summary()
        yield HistogramMetricFamily(PREFIX + "store_commit_seconds", "Time of one commit group (write + fsync).",
                                    buckets=[("+Inf" if b == float("inf") else repr(b), n) for b, n in c["buckets"]],
                                    sum_value=c["sum_s"])
        parquet = hub.get("parquet") or {}
        if parquet.get("complete_through_received"):
            yield GaugeMetricFamily(PREFIX + "parquet_complete_through_timestamp_seconds", "Receive time of the "
                                    "newest chunk up to which the Parquet tier is complete.",
                                    value=parquet["complete_through_received"])
        yield from self._per_robot(snap)

    @staticmethod
    def _by_code(name: str, text: str, label: str, counts: dict[str, int] | None) -> Iterator[Metric]:
        family = CounterMetricFamily(PREFIX + name, text, labels=[label])
        for code, n in sorted((counts or {}).items()):
            family.add_metric([str(code)], n)
        yield family

    def _per_robot(self, snap: dict[str, Any]) -> Iterator[Metric]:
        robots = sorted(snap["robots"].values(), key=lambda r: -(r.get("last_seen") or r.get("known_since") or 0))
        shown = robots[:self.cfg.max_robot_series]
        yield GaugeMetricFamily(PREFIX + "robot_series_dropped", "Robots beyond metrics.max_robot_series: no "
                                "per-robot series (their counts are in the hub-wide ones).",
                                value=len(robots) - len(shown))
        info = GaugeMetricFamily(PREFIX + "robot_info", "1 per robot: its hardware and state (alive, dead, cut, "
                                 "gone).", labels=["robot", "hardware", "state"])
        up = GaugeMetricFamily(PREFIX + "robot_connected", "1 while the robot has a live connection.",
                               labels=["robot"])
        for r in shown:
            info.add_metric([r["robot_id"], r.get("hardware") or "", r.get("state") or ""], 1)
            up.add_metric([r["robot_id"]], float(r.get("state") == ALIVE))
        yield info
        yield up
        for key, (name, kind, text, scale) in PER_ROBOT.items():
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(PREFIX + name, text,
                                                                                      labels=["robot"])
            for r in shown:
                if r.get(key) is not None:
                    family.add_metric([r["robot_id"]], r[key] * scale)
            yield family
