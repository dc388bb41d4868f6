"""V-trace by hand: a worked example, the on-policy limit, the staleness limit and where gradients flow."""

from __future__ import annotations

import math

import pytest
import torch

from shared_policy.vtrace import VTraceConfig, policy_loss, staleness_mask, value_loss, vtrace

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_worked_example_with_truncated_ratios_and_episode_ends_in_the_middle():
    # gamma 0.9, lambda 1, rho_bar 1, c_bar 0.8, pg_rho_bar 1. T = 4 steps, B = 2 sequences.
    cfg = VTraceConfig(gamma=0.9, lam=1.0, rho_bar=1.0, c_bar=0.8, pg_rho_bar=1.0)
    # Sequence 0: the episode TERMINATES after step 1 (nothing bootstrapped there); step 2 starts the next.
    #   ratios pi/mu = [2, 0.5, 1, 1.5] -> rho = min(1, r) = [1, 0.5, 1, 1] (2 and 1.5 truncated)
    #                                      c = 0.8 * ... = min(0.8, r) = [0.8, 0.5, 0.8, 0.8] (1 truncated to 0.8)
    #   rewards [1, 0, 2, 1]; V(x_t) [0.5, 1, 2, 1]; next_values [V(x1)=1, 7 (unused: terminal), V(x3)=1, 3 (bootstrap)]
    #   deltas: t0 1 * (1 + 0.9*1 - 0.5) = 1.4      t1 0.5 * (0 + 0 - 1) = -0.5
    #           t2 1 * (2 + 0.9*1 - 2) = 0.9        t3 1 * (1 + 0.9*3 - 1) = 2.7
    #   vs - V backwards: t3 2.7; t2 0.9 + 0.9*0.8*2.7 = 2.844; t1 -0.5 (the trace stops at the end);
    #                     t0 1.4 + 0.9*0.8*(-0.5) = 1.04
    #   vs = [1.54, 0.5, 4.844, 3.7]
    #   q = r + gamma * vs_{t+1}: t0 1 + 0.9*0.5 = 1.45; t1 0 (terminal); t2 2 + 0.9*3.7 = 5.33; t3 1 + 0.9*3 = 3.7
    #   advantages q - V = [0.95, -1, 3.33, 2.7]; pg = min(1, r) * adv = [0.95, -0.5, 3.33, 2.7]
    # Sequence 1: a TIME-OUT after step 1: it bootstraps from V(final obs) = next_values[1] = 4, trace stops.
    #   ratios [1, 3, 1, 1] -> rho [1, 1, 1, 1], c [0.8, 0.8, 0.8, 0.8]
    #   rewards [1, 1, 1, 1]; V [1, 2, 0, 1]; next_values [2, 4 (final obs of episode), 1, 0 (bootstrap)]
    #   deltas: t0 1 + 0.9*2 - 1 = 1.8; t1 1 + 0.9*4 - 2 = 2.6; t2 1 + 0.9*1 - 0 = 1.9; t3 1 + 0 - 1 = 0
    #   vs - V: t3 0; t2 1.9 + 0.72*0 = 1.9; t1 2.6; t0 1.8 + 0.72*2.6 = 3.672  ->  vs = [4.672, 4.6, 1.9, 1]
    #   q: t0 1 + 0.9*4.6 = 5.14; t1 1 + 0.9*4 = 4.6; t2 1 + 0.9*1 = 1.9; t3 1 + 0.9*0 = 1
    #   advantages [4.14, 2.6, 1.9, 0]; pg = min(1, r) * adv = the same (ratio 3 truncated to 1)
    col = lambda a, b: torch.tensor([a, b], dtype=torch.float64).T  # noqa: E731  two columns -> [T, 2]
    behaviour = torch.zeros(4, 2, dtype=torch.float64)
    target = col([LN2, -LN2, 0.0, math.log(1.5)], [0.0, LN3, 0.0, 0.0])
    rewards = col([1, 0, 2, 1], [1, 1, 1, 1])
    values = col([0.5, 1, 2, 1], [1, 2, 0, 1])
    next_values = col([1, 7, 1, 3], [2, 4, 1, 0])
    dones = col([0, 1, 0, 0], [0, 1, 0, 0])
    time_outs = col([0, 0, 0, 0], [0, 1, 0, 0])

    out = vtrace(behaviour, target, rewards, values, next_values, dones, time_outs, cfg)

    torch.testing.assert_close(out.vs, col([1.54, 0.5, 4.844, 3.7], [4.672, 4.6, 1.9, 1.0]))
    torch.testing.assert_close(out.advantages, col([0.95, -1.0, 3.33, 2.7], [4.14, 2.6, 1.9, 0.0]))
    torch.testing.assert_close(out.pg_advantages, col([0.95, -0.5, 3.33, 2.7], [4.14, 2.6, 1.9, 0.0]))
    torch.testing.assert_close(out.rhos, col([1, 0.5, 1, 1], [1, 1, 1, 1]))


def n_step_returns(rewards, next_values, dones, time_outs, gamma):
    """Discounted sums written out directly (no recursion): for each t, rewards up to the step that ends the
    episode or the sequence, plus gamma^n times the value the last of them ended in (0 after a termination)."""
    steps, batch = rewards.shape
    out = torch.zeros_like(rewards)
    for b in range(batch):
        for t in range(steps):
            end = next((k for k in range(t, steps) if dones[k, b]), steps - 1)
            total = sum(gamma ** (k - t) * rewards[k, b] for k in range(t, end + 1))
            terminal = dones[end, b] and not time_outs[end, b]
            out[t, b] = total + (0.0 if terminal else gamma ** (end - t + 1) * next_values[end, b])
    return out


def random_sequences(seed: int, steps: int = 7, batch: int = 5):
    g = torch.Generator().manual_seed(seed)
    rand = lambda: torch.randn(steps, batch, generator=g, dtype=torch.float64)  # noqa: E731
    values = rand()
    # inside an episode the value a step ended in is the next step's value
    next_values = torch.cat([values[1:], rand()[:1]])
    dones = (torch.rand(steps, batch, generator=g) < 0.25).double()
    time_outs = dones * (torch.rand(steps, batch, generator=g) < 0.5).double()
    ended = dones.bool()
    next_values[:-1][ended[:-1]] = rand()[:-1][ended[:-1]]  # after an episode end: the final obs' value, not V(x_{t+1})
    return rand(), values, next_values, dones, time_outs


@pytest.mark.parametrize("seed", range(4))
def test_on_policy_vtrace_equals_the_n_step_discounted_returns(seed):
    rewards, values, next_values, dones, time_outs = random_sequences(seed)
    assert dones.sum() > 0 and time_outs.sum() > 0  # the seeds exercise both kinds of episode end
    logp = torch.randn(rewards.shape, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    cfg = VTraceConfig(gamma=0.95, lam=1.0, rho_bar=1.0, c_bar=1.0)
    out = vtrace(logp, logp.clone(), rewards, values, next_values, dones, time_outs, cfg)
    expected = n_step_returns(rewards, next_values, dones, time_outs, cfg.gamma)
    torch.testing.assert_close(out.vs, expected)
    torch.testing.assert_close(out.pg_advantages, expected - values)
    torch.testing.assert_close(out.advantages, expected - values)


def test_staleness_limit_masks_exactly_the_steps_of_too_old_trunks():
    versions = torch.tensor([[7, 4], [7, 3], [5, 3], [4, 8]])
    mask = staleness_mask(versions, current_version=8, max_staleness=3)  # keeps versions 5..8
    assert mask.tolist() == [[1, 0], [1, 0], [1, 0], [0, 1]]

    rewards, values, next_values, dones, time_outs = random_sequences(3, steps=4, batch=2)
    behaviour = torch.zeros(4, 2, dtype=torch.float64)
    target = torch.full((4, 2), 0.1, dtype=torch.float64, requires_grad=True)
    cfg = VTraceConfig(gamma=0.9)
    out = vtrace(behaviour, target, rewards, values, next_values, dones, time_outs, cfg, mask=mask)
    policy_loss(target, behaviour, out, mask, cfg).backward()
    assert ((target.grad != 0) == mask.bool()).all()  # the actor learns from the fresh steps only
    assert (out.advantages[mask == 0] == 0).all() and (out.vs[mask == 0] == values[mask == 0]).all()
    # step 2 of sequence 0 is fresh and its episode goes on into step 3, which is stale: step 2's target stops
    # there and bootstraps from next_values, exactly as if the episode were cut (timed out) after step 2
    assert dones[2, 0] == 0
    unmasked = vtrace(behaviour, target, rewards, values, next_values, dones, time_outs, cfg)
    cut = dones.clone()
    cut[2, 0] = 1.0  # the same as an episode cut (time-out) after step 2
    cut_tos = time_outs.clone()
    cut_tos[2, 0] = 1.0
    as_cut = vtrace(behaviour, target, rewards, values, next_values, cut, cut_tos, cfg)
    torch.testing.assert_close(out.vs[:3, 0], as_cut.vs[:3, 0])
    assert out.vs[2, 0] != unmasked.vs[2, 0]  # the stale step's correction no longer flows back


@pytest.mark.parametrize("loss", ["vtrace", "appo"])
def test_gradients_reach_the_actor_through_its_log_probs_and_the_critic_through_its_values_only(loss):
    rewards, values0, next_values0, dones, time_outs = random_sequences(5)
    behaviour = torch.randn(rewards.shape, dtype=torch.float64, requires_grad=True)
    target = (behaviour.detach() + 0.1).requires_grad_(True)
    values = values0.clone().requires_grad_(True)
    next_values = next_values0.clone().requires_grad_(True)
    cfg = VTraceConfig(policy_loss=loss)
    out = vtrace(behaviour, target, rewards, values, next_values, dones, time_outs, cfg)
    assert not any(x.requires_grad for x in out)  # targets, not functions of the parameters
    mask = torch.ones_like(rewards)

    policy_loss(target, behaviour, out, mask, cfg).backward()
    assert target.grad is not None and target.grad.abs().sum() > 0
    assert values.grad is None and next_values.grad is None and behaviour.grad is None
    target.grad = None

    value_loss(values, out, mask).backward()
    assert values.grad is not None and values.grad.abs().sum() > 0
    # d/dV 0.5 (vs - V)^2 averaged = (V - vs) / n: vs itself is a constant
    torch.testing.assert_close(values.grad, (values0 - out.vs) / mask.numel())
    assert target.grad is None and next_values.grad is None and behaviour.grad is None


def test_appo_clips_the_ratio_to_the_behaviour_policy():
    # ratios [1.5, 0.5, 1.1] with clip 0.2, advantages [+1, -1, +1]:
    #   t0 min(1.5*1, 1.2*1) = 1.2 -> clipped, no gradient; t1 min(0.5*-1, 0.8*-1) = -0.8 -> clipped, no gradient;
    #   t2 min(1.1, 1.1) = 1.1 inside the clip -> gradient d(ratio)/d(logp) = ratio = 1.1
    cfg = VTraceConfig(policy_loss="appo", clip_param=0.2)
    behaviour = torch.zeros(3, 1, dtype=torch.float64)
    target = torch.log(torch.tensor([[1.5], [0.5], [1.1]], dtype=torch.float64)).requires_grad_(True)
    adv = torch.tensor([[1.0], [-1.0], [1.0]], dtype=torch.float64)
    returns = vtrace(behaviour, target, adv, torch.zeros_like(adv), torch.zeros_like(adv), torch.ones_like(adv),
                     torch.zeros_like(adv), cfg)  # one-step terminal episodes: advantage = reward
    torch.testing.assert_close(returns.advantages, adv)
    loss = policy_loss(target, behaviour, returns, torch.ones_like(adv), cfg)
    torch.testing.assert_close(loss, torch.tensor(-(1.2 - 0.8 + 1.1) / 3, dtype=torch.float64))
    loss.backward()
    torch.testing.assert_close(target.grad, torch.tensor([[0.0], [0.0], [-1.1 / 3]], dtype=torch.float64))


def test_importance_weights_scale_each_sequences_share_of_the_losses():
    rewards, values0, next_values, dones, time_outs = random_sequences(6, steps=5, batch=3)
    logp = torch.zeros_like(rewards)
    cfg = VTraceConfig()
    out = vtrace(logp, logp, rewards, values0, next_values, dones, time_outs, cfg)
    mask = torch.ones_like(rewards)
    weights = torch.tensor([1.0, 0.5, 0.0])
    values = values0.clone().requires_grad_(True)
    value_loss(values, out, mask, weights).backward()
    # d/dV_tb = w_b (V_tb - vs_tb) / (T B): the third sequence (weight 0) teaches the critic nothing
    torch.testing.assert_close(values.grad, weights.double() * (values0 - out.vs) / mask.numel())
    target = logp.clone().requires_grad_(True)
    policy_loss(target, logp, out, mask, cfg, weights).backward()
    torch.testing.assert_close(target.grad, -weights.double() * out.pg_advantages / mask.numel())


@pytest.mark.parametrize("loss", ["vtrace", "appo"])
def test_a_masked_step_whose_ratio_overflows_leaves_targets_and_loss_finite(loss):
    # a very stale step: its target log-prob is far above the behaviour's, exp overflows to inf in float32
    rewards, values, next_values, dones, time_outs = (x.float() for x in random_sequences(8, steps=4, batch=2))
    behaviour = torch.zeros(4, 2)
    target = torch.zeros(4, 2)
    mask = torch.ones(4, 2)
    cfg = VTraceConfig(policy_loss=loss)
    target[3, 1], mask[3, 1] = 200.0, 0.0
    assert torch.isinf(torch.exp(target - behaviour)).any()
    out = vtrace(behaviour, target, rewards, values, next_values, dones, time_outs, cfg, mask=mask)
    assert all(torch.isfinite(x).all() for x in out)
    target.requires_grad_(True)
    loss_value = policy_loss(target, behaviour, out, mask, cfg)
    assert torch.isfinite(loss_value)
    loss_value.backward()  # a NaN gradient would reach every parameter through the learner's norm clip
    assert torch.isfinite(target.grad).all() and target.grad[3, 1] == 0.0


def test_bad_config_values_raise_naming_the_key():
    with pytest.raises(ValueError, match="vtrace.rho_bar"):
        VTraceConfig(rho_bar=0.0)
    with pytest.raises(ValueError, match="vtrace.policy_loss"):
        VTraceConfig(policy_loss="ppo")
    with pytest.raises(ValueError, match="vtrace.max_trunk_staleness"):
        VTraceConfig(max_trunk_staleness=-1)
