"""Export one hardware type's deterministic actor (normaliser, stem, trunk, head) to ONNX."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shared_policy.policy import FleetPolicy


class DeployedActor(nn.Module):
    """obs (B, num_obs) -> action mean (B, num_actions); the running normaliser is part of the graph."""

    def __init__(self, policy: FleetPolicy, hardware: str):
        super().__init__()
        policy.spec(hardware)
        self.stem = policy.stems[hardware]
        self.trunk = policy.trunk
        self.head = policy.heads[hardware]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic action."""
        return self.head(self.trunk(self.stem(obs)))


def export_onnx(policy: FleetPolicy, hardware: str, path: str | Path, opset: int = 17) -> Path:
    """Write ``hardware``'s actor to ``path`` with a dynamic batch dimension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    actor = DeployedActor(policy, hardware).eval()
    example = torch.zeros(1, policy.spec(hardware).num_obs)
    torch.onnx.export(actor, (example,), str(path), input_names=["obs"], output_names=["action"],
                      dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}}, opset_version=opset, dynamo=False)
    return path
