"""What the agent reports about itself: control-loop timing percentiles and the one-line status."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


class LoopTiming:
    """Per-period timings of the control loop (the most recent 200,000 periods) and deadline misses."""

    def __init__(self, period: float):
        self.period = period
        self.inference = deque(maxlen=200_000)  # s, policy forward pass
        self.compute = deque(maxlen=200_000)  # s, wake-up to command sent
        self.lag = deque(maxlen=200_000)  # s, wake-up after the scheduled tick (jitter)
        self.periods = 0
        self.misses = 0

    def summary(self) -> dict[str, float]:
        """Percentiles in milliseconds, rate and miss fraction."""
        out: dict[str, float] = {"periods": self.periods, "deadline_misses": self.misses,
                                 "miss_rate": self.misses / max(self.periods, 1)}
        for name, q in (("inference", self.inference), ("compute", self.compute), ("jitter", self.lag)):
            if q:
                a = np.fromiter(q, dtype=np.float64) * 1e3
                out.update({f"{name}_p50_ms": float(np.percentile(a, 50)), f"{name}_p99_ms": float(np.percentile(a, 99)),
                            f"{name}_p999_ms": float(np.percentile(a, 99.9)), f"{name}_max_ms": float(a.max())})
        return out


def status_line(s: dict[str, Any]) -> str:
    """One terminal line from a status dict."""
    ret = s.get("mean_return_last_20")
    safety = sum(s.get("safety", {}).values())
    return (f"[agent {s['robot_id']}] {s['rate_hz']:.1f} Hz | misses {s['deadline_misses']} "
            f"({100 * s['miss_rate']:.2f}%) | inference p99 {s.get('inference_p99_ms', float('nan')):.2f} ms | "
            f"ep {s['episodes']} return {ret if ret is None else round(ret, 1)} | trunk v{s['trunk_version']} | "
            f"adapter v{s['adapter_version']} ({s['adapter_updates']} updates) | spool {s['spool_depth']} chunks | "
            f"safety {safety}{' | E-STOP' if s['estop'] else ''}")
