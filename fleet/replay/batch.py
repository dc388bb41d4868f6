"""A sampled batch of sequences as [T, B] tensors: what a V-trace learner consumes as it is."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from fleet.replay.sequences import Sequence
from fleet.replay.table import Sample

_STACKED = ("obs", "critic_obs", "actions", "log_probs", "rewards", "dones", "time_outs", "mask", "trunk_version",
            "adapter_version")


@dataclass(frozen=True)
class SequenceBatch:
    """B sequences of T steps of one hardware type, time-major.

    For V-trace (``shared_policy.vtrace``): ``values = V(critic_obs[:-1])``, ``next_values = V(critic_obs[1:])``,
    behaviour log-probs ``log_probs``, ``dones`` / ``time_outs`` as recorded, and ``mask`` times the staleness
    mask of ``trunk_version`` as the mask. ``weights`` scale each sequence's loss (prioritised replay); the
    learner sends new priorities for ``keys`` back to the table.
    """

    hardware: str
    robot_ids: tuple[str, ...]  # (B,): whose adapter to apply to each column
    keys: np.ndarray  # (B,) int64 table keys
    weights: torch.Tensor  # (B,) importance weights
    probabilities: torch.Tensor  # (B,)
    obs: torch.Tensor  # [T, B, O]
    critic_obs: torch.Tensor  # [T + 1, B, C]
    actions: torch.Tensor  # [T, B, A]
    log_probs: torch.Tensor  # [T, B]
    rewards: torch.Tensor  # [T, B]
    dones: torch.Tensor  # [T, B]
    time_outs: torch.Tensor  # [T, B]
    mask: torch.Tensor  # [T, B] 1 on real steps
    trunk_version: torch.Tensor  # [T, B] int64
    adapter_version: torch.Tensor  # [T, B] int64

    @classmethod
    def from_sample(cls, sample: Sample) -> SequenceBatch:
        """Stack a table sample of :class:`Sequence` items (one hardware type) along a new batch axis 1."""
        items: list[Sequence] = sample.items
        hardware = {s.hardware for s in items}
        if len(hardware) != 1:
            raise ValueError(f"a batch holds one hardware type, got {sorted(hardware)}")
        stacked = {name: torch.from_numpy(np.stack([getattr(s, name) for s in items], axis=1)) for name in _STACKED}
        return cls(hardware.pop(), tuple(s.robot_id for s in items), sample.keys,
                   torch.from_numpy(sample.weights), torch.from_numpy(sample.probabilities.astype(np.float32)),
                   **stacked)

    def to(self, device: torch.device | str) -> SequenceBatch:
        """The same batch with every tensor on ``device``."""
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})
