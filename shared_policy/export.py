"""Export one hardware type's deterministic actor (normaliser, stem, trunk, head, a unit's adapter) to ONNX."""

from __future__ import annotations

from pathlib import Path

import torch

from shared_policy.actor import MergedActor
from shared_policy.adapter import Adapter
from shared_policy.policy import FleetPolicy


def export_onnx(policy: FleetPolicy, hardware: str, path: str | Path, adapter: Adapter | None = None,
                opset: int = 17) -> Path:
    """Write ``hardware``'s actor, with ``adapter`` merged into its weights, to ``path`` (dynamic batch).

    The graph maps ``obs`` (B, num_obs) to ``action`` (B, num_actions), the mean action; the running
    normaliser is part of it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    actor = MergedActor(policy, hardware, adapter)
    example = torch.zeros(1, policy.spec(hardware).num_obs)
    torch.onnx.export(actor, (example,), str(path), input_names=["obs"], output_names=["action"],
                      dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}}, opset_version=opset, dynamo=False)
    return path
