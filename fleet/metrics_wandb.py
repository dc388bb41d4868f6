"""The hub's hub-wide metrics to a W&B run, through the project's logger (shared_policy/tracking.py).

Offline unless WANDB_MODE says otherwise, so it never needs an account or a network; ``WANDB_MODE=disabled`` or
``metrics.wandb=false`` means no run at all (no wandb import, no process, no files). A thread of its own starts
the run (``wandb.init`` takes seconds) and logs ``hub/<key>`` for every key of :data:`fleet.metrics.HUB_WIDE`,
plus ``hub/store_commit_ms_mean`` over the interval, every ``metrics.wandb_every_s``, and once more at stop.
A failing W&B is logged and left behind; ingest never waits for it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from fleet.metrics import HubMetrics, hub_wide
from fleet.metrics_config import MetricsConfig
from shared_policy.tracking import RunLogger, WandbLogger

log = logging.getLogger(__name__)


def wandb_wanted(cfg: MetricsConfig) -> bool:
    """Whether the hub logs to W&B: ``metrics.wandb`` and WANDB_MODE not ``disabled``."""
    return cfg.wandb and os.environ.get("WANDB_MODE", "").lower() != "disabled"


class WandbReporter:
    """Logs the latest published snapshot of ``metrics`` to a W&B run every ``wandb_every_s`` (module docstring)."""

    def __init__(self, cfg: MetricsConfig, metrics: HubMetrics, run_config: dict[str, Any]):
        self.cfg, self.metrics, self.run_config = cfg, metrics, run_config
        self.logger: RunLogger | None = None
        self.logged = 0  # log calls made
        self._stop = threading.Event()
        self._last_commits = (0, 0.0)
        self._thread = threading.Thread(target=self._run, name="hub-wandb", daemon=True)

    def start(self) -> None:
        """Start the run and the periodic logging."""
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Log once more, finish the run (an offline run stays under ./wandb or WANDB_DIR) and end the thread."""
        self._stop.set()
        if self._thread.ident is None:  # never started (the hub failed while starting its outlets)
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("W&B did not finish within %.0f s; its run may lack the last metrics", timeout)

    def scalars(self) -> dict[str, float]:
        """What one log call records: ``hub/<key>`` of the hub-wide numbers, and the interval's mean commit time."""
        out = {f"hub/{k}": v for k, v in hub_wide(self.metrics.snapshot).items()}
        c = self.metrics.commits.summary()
        n, s = c["count"] - self._last_commits[0], c["sum_s"] - self._last_commits[1]
        self._last_commits = (c["count"], c["sum_s"])
        out["hub/store_commit_ms_mean"] = s / n * 1e3 if n else 0.0
        return out

    def _run(self) -> None:
        try:
            self.logger = WandbLogger(self.cfg.wandb_project, "hub", self.run_config, self.cfg.wandb_run_name)
        except Exception as exc:  # noqa: BLE001 - no W&B must not mean no hub
            log.warning("W&B run not started, hub metrics go to Prometheus and the registry only: %s", exc)
            return
        try:
            while not self._stop.wait(self.cfg.wandb_every_s):
                self._log()
            self._log()
        finally:
            try:
                self.logger.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("W&B run did not finish cleanly: %s", exc)

    def _log(self) -> None:
        try:
            self.logger.log(self.scalars())
            self.logged += 1
        except Exception as exc:  # noqa: BLE001 - a metrics outlet never stops the hub
            log.warning("W&B log failed: %s", exc)
