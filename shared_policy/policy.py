"""The fleet policy: one trunk shared by every hardware type, a stem and a head per type, and a critic."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shared_policy.actor import actor_layers, run_actor
from shared_policy.config import PolicyConfig
from shared_policy.modules import Head, Stem, ValueHead, mlp


@dataclass(frozen=True)
class HardwareSpec:
    """What the policy must know of a hardware type: its names and vector layouts, and the hardware profile
    it was trained on (its hash and canonical JSON; empty when unknown)."""

    name: str
    num_obs: int
    num_actions: int
    num_critic_obs: int
    obs_layout: tuple[tuple[str, int], ...] = ()
    action_names: tuple[str, ...] = ()
    profile_hash: str = ""
    profile: str = ""


class FleetPolicy(nn.Module):
    """Actor: stem[hw] -> shared trunk -> head[hw]. Critic: privileged obs -> value, per ``cfg.critic``."""

    def __init__(self, cfg: PolicyConfig, specs: dict[str, HardwareSpec]):
        super().__init__()
        if cfg.critic not in ("separate", "shared_trunk"):
            raise ValueError(f"policy.critic must be 'separate' or 'shared_trunk', got '{cfg.critic}'")
        if not specs:
            raise ValueError("a policy needs at least one hardware type")
        self.cfg = cfg
        self.specs = dict(specs)
        d = cfg.latent_dim
        self.trunk = mlp([d, *cfg.trunk_hidden, d], cfg.activation, last_activation=True)
        self.stems = nn.ModuleDict({n: Stem(s.num_obs, d, cfg.stem_hidden, cfg.activation) for n, s in specs.items()})
        self.heads = nn.ModuleDict({n: Head(d, s.num_actions, cfg.init_std) for n, s in specs.items()})
        self.critic_stems = nn.ModuleDict(
            {n: Stem(s.num_critic_obs, d, cfg.stem_hidden, cfg.activation) for n, s in specs.items()})
        self.critic_trunk = (mlp([d, *cfg.critic_hidden, d], cfg.activation, last_activation=True)
                             if cfg.critic == "separate" else None)
        self.value_heads = nn.ModuleDict({n: ValueHead(d) for n in specs})

    def spec(self, hardware: str) -> HardwareSpec:
        """The spec of ``hardware``, or a clear error naming the types this policy has."""
        if hardware not in self.specs:
            raise KeyError(f"policy has no hardware type '{hardware}'; it has {sorted(self.specs)}")
        return self.specs[hardware]

    # -- actor ---------------------------------------------------------------------------------------
    def action_mean(self, hardware: str, obs: torch.Tensor, adapter: nn.Module | None = None) -> torch.Tensor:
        """Deterministic action (B, A); ``adapter`` (a unit's :class:`Adapter`) folded into the weights."""
        return run_actor(actor_layers(self, hardware, adapter), obs)

    def log_std(self, hardware: str, adapter: nn.Module | None = None) -> torch.Tensor:
        """Per-action log standard deviation."""
        base = self.heads[hardware].log_std
        return base if adapter is None else base + adapter.log_std_delta

    # -- critic --------------------------------------------------------------------------------------
    def value(self, hardware: str, critic_obs: torch.Tensor) -> torch.Tensor:
        """State value (B,) from privileged observations."""
        latent = self.critic_stems[hardware](critic_obs)
        trunk = self.critic_trunk if self.critic_trunk is not None else self.trunk
        return self.value_heads[hardware](trunk(latent))

    @torch.no_grad()
    def update_normalizers(self, hardware: str, obs: torch.Tensor, critic_obs: torch.Tensor) -> None:
        """Fold a batch of observations into the hardware type's running normalisers."""
        self.stems[hardware].normalizer.update(obs)
        self.critic_stems[hardware].normalizer.update(critic_obs)

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(actor, critic) parameters of every hardware type; a shared trunk counts with the actor."""
        actor = [*self.trunk.parameters(), *self.stems.parameters(), *self.heads.parameters()]
        critic = [*self.critic_stems.parameters(), *self.value_heads.parameters()]
        if self.critic_trunk is not None:
            critic += list(self.critic_trunk.parameters())
        return actor, critic

    def actor_parameters(self, hardware: str) -> list[nn.Parameter]:
        """Parameters the actor of ``hardware`` uses (trunk + its stem and head)."""
        return [*self.trunk.parameters(), *self.stems[hardware].parameters(), *self.heads[hardware].parameters()]
