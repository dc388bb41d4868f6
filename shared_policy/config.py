"""Typed configs (Hydra schemas) of the policy and PPO."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PolicyConfig:
    """Shared trunk in a common latent space; per hardware type a stem and a head."""

    latent_dim: int = 128  # width of the shared latent space: stems' outputs, the trunk's input and output
    trunk_hidden: list[int] = field(default_factory=lambda: [256, 128])  # the shared trunk's hidden widths
    stem_hidden: list[int] = field(default_factory=lambda: [128])  # each stem's hidden widths (critic's too)
    activation: str = "elu"  # elu | relu | tanh | silu: after every hidden layer and each latent output
    init_std: float = 1.0  # initial std of each action (policy units, before action_scale); then learned
    # critic: "separate" (its own stems/trunk reading privileged obs) or "shared_trunk" (actor trunk, own stems)
    critic: str = "separate"
    critic_hidden: list[int] = field(default_factory=lambda: [256, 128])  # the critic's own trunk (separate)


@dataclass
class AdapterConfig:
    """Per-unit adapter: rank-r deltas on trunk and stem layers, a head correction."""

    rank: int = 4  # r of each low-rank delta: more capacity, more parameters to learn from little data
    alpha: float = 1.0  # a delta is scaled by alpha / rank


@dataclass
class PPOConfig:
    """PPO with GAE and a KL-adaptive learning rate (rsl_rl's defaults)."""

    num_steps_per_env: int = 24  # control steps per world per rollout (one rollout per iteration)
    num_learning_epochs: int = 5  # passes over each rollout per update
    num_mini_batches: int = 4  # per epoch; each holds a slice of every hardware type's rollout
    clip_param: float = 0.2  # PPO ratio clip epsilon; also the value clip (use_clipped_value_loss)
    gamma: float = 0.99  # discount per control step (horizon about 1 / (1 - gamma) steps)
    lam: float = 0.95  # GAE lambda: lower trades variance for bias
    value_loss_coef: float = 1.0  # weight of the value loss in the total loss
    entropy_coef: float = 0.01  # weight of the entropy bonus (exploration)
    learning_rate: float = 1e-3  # Adam's initial learning rate (schedule=adaptive then moves it)
    max_grad_norm: float = 1.0  # gradient norm clip, for actor and critic parameters separately
    schedule: str = "adaptive"  # adaptive (learning rate follows the KL, see desired_kl) | fixed
    desired_kl: float = 0.01  # adaptive: lr / 1.5 when a minibatch's KL is above 2x this, x 1.5 below 0.5x
    lr_min: float = 1e-5  # adaptive: lower bound of the learning rate
    lr_max: float = 1e-2  # adaptive: upper bound of the learning rate
    use_clipped_value_loss: bool = True  # value loss: max of the plain and the clipped (clip_param) error


@dataclass
class AdapterLearnerConfig:
    """PPO settings for adapter learning on a robot (small data: more epochs, a gentle step)."""

    rank: int = 4  # r of each low-rank delta: more capacity, more parameters to learn from little data
    alpha: float = 1.0  # a delta is scaled by alpha / rank
    # An update every 1000 steps over the last 2000 (a sliding window): on the adaptation benchmark's 20
    # tuning units this recovered 0.66 of the gap against 0.50 for an update every 2000 over its own 2000.
    steps_per_update: int = 1000
    replay_updates: int = 2  # each update learns from the steps of this many updates, its own included
    epochs: int = 8  # passes over this update's steps and the replayed ones, each followed by a critic pass
    minibatches: int = 4  # per epoch, for the adapter and the critic alike
    clip_param: float = 0.2  # PPO ratio clip epsilon (the critic's loss is not clipped)
    gamma: float = 0.99  # discount per control step
    lam: float = 0.95  # GAE lambda
    learning_rate: float = 1e-3  # the adapter's initial Adam learning rate (then follows the KL: desired_kl)
    critic_learning_rate: float = 1e-3  # Adam learning rate of the learner's own critic copy (fixed)
    critic_warmup_epochs: int = 20  # fit the value function on the first batch before any policy step
    entropy_coef: float = 0.0  # weight of the entropy bonus (0: none)
    # Learn the adapter's log-std offset too (true), or only the mean (false): the exploration noise then stays as
    # the trunk (or its rebased adapter) set it, so a unit's exploring returns change only as its mean actions do.
    # Without an entropy bonus PPO narrows the noise, which can raise exploring returns with no better mean action.
    # Held, entropy_coef has nothing to act on; and drift_kl > 0 still pulls the noise toward its anchor's.
    learn_log_std: bool = True
    max_grad_norm: float = 1.0  # gradient norm clip, for adapter and critic separately
    desired_kl: float = 0.01  # every minibatch: lr / 1.5 when the KL is above 2x this, x 1.5 below 0.5x
    lr_min: float = 1e-5  # lower bound of the adapter's learning rate
    lr_max: float = 1e-2  # upper bound of the adapter's learning rate
    # Trust region around the unit's anchor (the first adapter it ran on its trunk): after each update the policy's
    # mean KL(anchor || adapter) on the update's observations is held to this by moving the weights back towards
    # the anchor (0 = no limit). A robot's few exploring episodes cannot resolve a 10% loss; this bounds how far
    # learning on them can walk the unit from what the fleet last gave it (robot_agent/drift_anchor.py keeps the anchor).
    drift_kl: float = 0.0
