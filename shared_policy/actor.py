"""One hardware type's actor, defined once: an observation normaliser and an ordered list of layers.

:func:`actor_layers` reads the actor out of a policy (a unit's adapter folded into the weights) as
``(weight, bias, activation)`` layers; :func:`run_actor` is the only forward pass. Every form of the
actor comes from these two: the policy's training forward (with or without an adapter, gradients
included), :class:`MergedActor` (inference, ONNX export) and :class:`NumpyActor` (the robot's control
loop). Folding ``W + scale * up @ down`` gives the adapted actor's exact function with the frozen
actor's op count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shared_policy.gaussian import standard_log_prob
from shared_policy.modules import ACTIVATIONS

if TYPE_CHECKING:
    from shared_policy.adapter import Adapter
    from shared_policy.policy import FleetPolicy

_ACTIVATION_NAMES = {cls: name for name, cls in ACTIVATIONS.items()}


@dataclass(frozen=True)
class Layer:
    """``activation(x @ weight.T + bias)``; ``activation`` None for the last (linear) layer."""

    weight: Any  # (out, in): a torch tensor or a numpy array
    bias: Any  # (out,)
    activation: str | None


@dataclass(frozen=True)
class ActorLayers:
    """The actor as data: obs -> clip((obs - obs_mean) * obs_scale) -> layers -> mean action; and its log std."""

    obs_mean: Any
    obs_scale: Any  # 1 / sqrt(var + eps) of the running normaliser
    obs_clip: float
    layers: tuple[Layer, ...]
    log_std: Any

    def map(self, fn: Callable[[Any], Any]) -> ActorLayers:
        """The same actor with ``fn`` applied to every array (detach, copy, convert to numpy)."""
        return replace(self, obs_mean=fn(self.obs_mean), obs_scale=fn(self.obs_scale), log_std=fn(self.log_std),
                       layers=tuple(Layer(fn(lay.weight), fn(lay.bias), lay.activation) for lay in self.layers))


@dataclass(frozen=True)
class ArrayOps:
    """The few operations :func:`run_actor` needs, for one array library."""

    linear: Callable[[Any, Any, Any], Any]
    clip: Callable[[Any, float], Any]
    activations: dict[str, Callable[[Any], Any]]


def _np_elu(x: np.ndarray) -> np.ndarray:
    # x > 0: max(x, 0) = x; x <= 0: expm1(x) >= x. Three calls where np.where takes four: this runs per tick.
    return np.maximum(x, np.expm1(np.minimum(x, 0)))


def _np_silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


TORCH_OPS = ArrayOps(linear=F.linear, clip=lambda x, c: torch.clamp(x, -c, c),
                     activations={"elu": F.elu, "relu": F.relu, "tanh": torch.tanh, "silu": F.silu})
# one observation at a time on a robot's CPU: plain matrix-vector products, no torch dispatcher
NUMPY_OPS = ArrayOps(linear=lambda x, w, b: x @ w.T + b, clip=lambda x, c: np.minimum(np.maximum(x, -c), c),
                     activations={"elu": _np_elu, "relu": lambda x: np.maximum(x, 0), "tanh": np.tanh,
                                  "silu": _np_silu})


def run_actor(actor: ActorLayers, obs: Any, ops: ArrayOps = TORCH_OPS) -> Any:
    """The actor's forward pass: mean action (..., A) for observations (..., O)."""
    x = ops.clip((obs - actor.obs_mean) * actor.obs_scale, actor.obs_clip)
    for layer in actor.layers:
        x = ops.linear(x, layer.weight, layer.bias)
        if layer.activation is not None:
            x = ops.activations[layer.activation](x)
    return x


def _linear_layers(seq: nn.Sequential) -> list[tuple[nn.Linear, str | None]]:
    """Each Linear of an MLP with the name of the activation that follows it (None if none does)."""
    out: list[tuple[nn.Linear, str | None]] = []
    for module in seq:
        if isinstance(module, nn.Linear):
            out.append((module, None))
        elif type(module) in _ACTIVATION_NAMES and out and out[-1][1] is None:
            out[-1] = (out[-1][0], _ACTIVATION_NAMES[type(module)])
        else:
            raise TypeError(f"an actor MLP holds Linear layers each followed by one activation, not {module}")
    return out


def actor_layers(policy: FleetPolicy, hardware: str, adapter: Adapter | None = None) -> ActorLayers:
    """``hardware``'s actor on ``policy`` as layers, with ``adapter`` (a unit's) folded into the weights.

    The tensors are the policy's own parameters (or differentiable functions of them and the adapter's),
    so training through :func:`run_actor` trains them; ``.map`` detaches a copy for inference.
    """
    policy.spec(hardware)
    if adapter is not None and adapter.hardware != hardware:
        raise ValueError(f"the adapter adapts hardware '{adapter.hardware}', not '{hardware}'")
    stem, head = policy.stems[hardware], policy.heads[hardware]
    linears = [*_linear_layers(stem.net), *_linear_layers(policy.trunk), (head.mean, None)]
    deltas = adapter.weight_deltas() if adapter is not None else [None] * len(linears)
    layers = [Layer(lin.weight if d is None else lin.weight + d, lin.bias, act)
              for (lin, act), d in zip(linears, deltas, strict=True)]
    if adapter is not None:  # the unit's constant offsets (calibration, sag) join the head's bias
        layers[-1] = replace(layers[-1], bias=layers[-1].bias + adapter.head_bias)
    norm = stem.normalizer
    return ActorLayers(norm.mean, torch.rsqrt(norm.var + norm.eps), float(norm.clip), tuple(layers),
                       policy.log_std(hardware, adapter))


class MergedActor(nn.Module):
    """One hardware type's frozen actor, a unit's adapter merged in: obs (B, O) -> mean action (B, A).

    What inference and the ONNX export run; the running normaliser is part of the graph.
    """

    def __init__(self, policy: FleetPolicy, hardware: str, adapter: Adapter | None = None):
        super().__init__()
        actor = actor_layers(policy, hardware, adapter).map(lambda t: t.detach().clone())
        self.obs_clip = actor.obs_clip
        self.activations = [layer.activation for layer in actor.layers]
        self.register_buffer("obs_mean", actor.obs_mean)
        self.register_buffer("obs_scale", actor.obs_scale)
        for i, layer in enumerate(actor.layers):
            self.register_buffer(f"weight{i}", layer.weight)
            self.register_buffer(f"bias{i}", layer.bias)
        self.register_buffer("log_std", actor.log_std)
        self.register_buffer("std", actor.log_std.exp())
        self.eval()

    def layers(self) -> ActorLayers:
        """This actor as layers (its buffers, wherever ``.to`` moved them)."""
        layers = tuple(Layer(getattr(self, f"weight{i}"), getattr(self, f"bias{i}"), act)
                       for i, act in enumerate(self.activations))
        return ActorLayers(self.obs_mean, self.obs_scale, self.obs_clip, layers, self.log_std)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Mean action (B, A)."""
        return run_actor(self.layers(), obs)


class NumpyActor:
    """The actor as numpy arrays for one observation at a time: the robot's control-loop form.

    On a robot's small CPU a single observation through torch's dispatcher costs 0.3 ms warm and over
    1 ms after the thread slept a period; the same arithmetic in numpy costs a fraction of that.
    """

    def __init__(self, actor: ActorLayers):
        self.actor = actor.map(lambda t: t.detach().cpu().numpy().astype(np.float32))
        self.log_std = self.actor.log_std
        self.std = np.exp(self.log_std)
        self._peak_log_prob = float(standard_log_prob(np.zeros_like(self.std), self.log_std))

    def mean_action(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action (A,) for one observation (O,) (or (B, A) for (B, O))."""
        return run_actor(self.actor, obs, NUMPY_OPS)

    def act(self, obs: np.ndarray, explore: bool,
            rng: np.random.Generator | None = None) -> tuple[np.ndarray, float]:
        """(action (A,), its log-density under this actor): the mean, or a sample around it if ``explore``."""
        mean = self.mean_action(obs)
        if not explore:
            return mean, self._peak_log_prob
        z = (rng or np.random.default_rng()).standard_normal(mean.shape, dtype=np.float32)
        # a = mean + std * z: z is the sample's standardised offset, exactly
        return mean + self.std * z, float(standard_log_prob(z, self.log_std))
