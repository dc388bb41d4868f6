import pytest
import torch

from shared_policy.config import PPOConfig
from shared_policy.gaussian import gaussian_kl
from shared_policy.ppo import PPO, adapt_learning_rate
from shared_policy.storage import compute_gae
from tests.shared_policy.conftest import reference_normal


def test_gae_without_dones_matches_the_textbook_recursion():
    r = torch.tensor([[1.0], [0.0], [2.0]])
    v = torch.tensor([[0.5], [0.2], [0.1]])
    last = torch.tensor([0.3])
    adv, ret = compute_gae(r, v, torch.zeros(3, 1), torch.zeros(3, 1), last, gamma=0.9, lam=0.8)
    d2 = 2.0 + 0.9 * 0.3 - 0.1
    d1 = 0.0 + 0.9 * 0.1 - 0.2
    d0 = 1.0 + 0.9 * 0.2 - 0.5
    a2, a1 = d2, d1 + 0.72 * d2
    assert adv[:, 0].tolist() == pytest.approx([d0 + 0.72 * a1, a1, a2])
    assert torch.allclose(ret, adv + v)


def test_terminal_step_stops_bootstrapping():
    r = torch.tensor([[1.0], [5.0]])
    v = torch.tensor([[0.0], [0.0]])
    dones = torch.tensor([[1.0], [0.0]])
    adv, _ = compute_gae(r, v, dones, torch.zeros(2, 1), torch.tensor([10.0]), gamma=0.9, lam=1.0)
    assert adv[0, 0].item() == pytest.approx(1.0)  # nothing of step 1 or the last value leaks back


def test_time_out_is_bootstrapped_with_its_own_value():
    r = torch.tensor([[1.0]])
    v = torch.tensor([[4.0]])
    dones = torch.tensor([[1.0]])
    adv_term, _ = compute_gae(r, v, dones, torch.tensor([[0.0]]), torch.tensor([0.0]), gamma=0.9, lam=0.95)
    adv_to, _ = compute_gae(r, v, dones, torch.tensor([[1.0]]), torch.tensor([0.0]), gamma=0.9, lam=0.95)
    assert adv_term.item() == pytest.approx(1.0 - 4.0)
    assert adv_to.item() == pytest.approx(1.0 + 0.9 * 4.0 - 4.0)


def test_kl_adaptive_learning_rate_follows_rsl_rl():
    cfg = PPOConfig(desired_kl=0.01, lr_min=1e-5, lr_max=1e-2)
    assert adapt_learning_rate(1e-3, 0.05, cfg) == pytest.approx(1e-3 / 1.5)
    assert adapt_learning_rate(1e-3, 0.001, cfg) == pytest.approx(1.5e-3)
    assert adapt_learning_rate(1e-3, 0.01, cfg) == pytest.approx(1e-3)
    assert adapt_learning_rate(1e-2, 0.0001, cfg) == 1e-2
    assert adapt_learning_rate(1e-5, 1.0, cfg) == 1e-5


def test_gaussian_kl_is_zero_for_equal_and_positive_otherwise():
    mu, sigma = torch.zeros(3, 2), torch.ones(3, 2)
    assert torch.allclose(gaussian_kl(mu, sigma, mu, sigma), torch.zeros(3))
    assert (gaussian_kl(mu, sigma, mu + 0.5, sigma * 2) > 0).all()


def test_ppo_learns_a_one_step_bandit_for_two_hardware_types(policy):
    """Reward = -|a - target|^2 per type: PPO must move each head's mean toward its own target."""
    torch.manual_seed(0)
    cfg = PPOConfig(num_steps_per_env=8, num_learning_epochs=4, num_mini_batches=2, learning_rate=3e-3,
                    entropy_coef=0.0, schedule="fixed")
    ppo = PPO(policy, cfg, {"arm2": 64, "arm7": 64})
    targets = {"arm2": torch.tensor([0.5, -0.5]), "arm7": torch.full((7,), 0.3)}
    obs = {hw: torch.randn(64, policy.spec(hw).num_obs) for hw in targets}
    crit = {hw: torch.randn(64, policy.spec(hw).num_critic_obs) for hw in targets}

    def error():
        return {hw: (policy.action_mean(hw, obs[hw]) - targets[hw]).pow(2).sum(-1).mean().item() for hw in targets}

    before = error()
    for _ in range(40):
        for hw in targets:
            for _ in range(cfg.num_steps_per_env):
                a, tr = ppo.act(hw, obs[hw], crit[hw])
                rew = -(a - targets[hw]).pow(2).sum(-1)
                ppo.storage[hw].add(**tr, rewards=rew, dones=torch.ones(64), time_outs=torch.zeros(64))
            ppo.storage[hw].compute_returns(torch.zeros(64), cfg.gamma, cfg.lam)
        losses = ppo.update()
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    after = error()
    for hw in targets:
        assert after[hw] < 0.3 * before[hw], (hw, before, after)


def test_act_records_the_log_prob_and_moments_of_the_policys_gaussian(policy):
    with torch.no_grad():
        policy.heads["arm7"].log_std.copy_(torch.linspace(-1.0, 0.5, 7))
    ppo = PPO(policy, PPOConfig(), {"arm7": 32})
    obs = torch.randn(32, policy.spec("arm7").num_obs)
    a, tr = ppo.act("arm7", obs, torch.randn(32, policy.spec("arm7").num_critic_obs))
    dist = reference_normal(policy, "arm7", obs)
    assert torch.allclose(tr["log_probs"], dist.log_prob(a).sum(-1), atol=1e-5)
    assert torch.allclose(tr["mu"], dist.mean) and torch.allclose(tr["sigma"], dist.stddev)
    z = ((a - dist.mean) / dist.stddev).flatten()  # the samples really come from that Gaussian
    assert abs(z.mean().item()) < 0.2 and abs(z.std().item() - 1.0) < 0.15
