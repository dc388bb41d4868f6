import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sim
from shared_policy.checkpoint import load_checkpoint, load_training_state
from shared_policy.config import PolicyConfig, PPOConfig
from shared_policy.tracking import NullLogger
from sim.evaluation import evaluate
from sim.pretrain import PretrainRunner, TrainingDiverged

SMALL = PolicyConfig(latent_dim=64, trunk_hidden=[64], stem_hidden=[64], critic_hidden=[64])


def runner(tmp_path, envs, **kw):
    return PretrainRunner(envs, SMALL, PPOConfig(**kw), tmp_path, NullLogger(), checkpoint_every=1000, seed=0)


@pytest.mark.timeout(300)
def test_short_cartpole_training_measurably_improves_return(tmp_path):
    train_env = sim.make_env("cartpole_swingup", "cartpole", 256, seed=0)
    eval_env = sim.make_env("cartpole_swingup", "cartpole", 32, seed=123)
    r = runner(tmp_path, [train_env])
    before = evaluate(r.policy, eval_env, 32).mean_return
    r.learn(30)
    after = evaluate(r.policy, eval_env, 32).mean_return
    assert after > before + 40, (before, after)


@pytest.mark.timeout(300)
def test_two_hardware_types_with_different_sizes_train_into_one_trunk(tmp_path):
    envs = [sim.make_env("reach", "arm2_planar", 32, seed=0), sim.make_env("reach", "arm7", 32, seed=1)]
    r = runner(tmp_path, envs, num_steps_per_env=8)
    trunk_before = [p.detach().clone() for p in r.policy.trunk.parameters()]
    hist = r.learn(2)
    assert len(hist) == 2 and math.isfinite(hist[-1]["loss/value"])
    assert any(not torch.equal(a, b) for a, b in zip(trunk_before, r.policy.trunk.parameters(), strict=True))
    path = r.save()
    _, manifest = load_checkpoint(path)
    assert set(manifest["hardware"]) == {"arm2_planar", "arm7"}
    assert manifest["hardware"]["arm7"]["num_actions"] == 7
    # the learning curve, one row per iteration: env steps over both types, each type's mean return (or empty)
    rows = [line.split(",") for line in (tmp_path / "curve.csv").read_text().splitlines()]
    assert rows[0] == ["iteration", "env_steps", "return/arm2_planar", "return/arm7"]
    assert [r[:2] for r in rows[1:]] == [["1", "512"], ["2", "1024"]]  # (32 + 32 worlds) x 8 steps a iteration
    for row, m in zip(rows[1:], hist, strict=True):
        for col, hw in ((2, "arm2_planar"), (3, "arm7")):
            assert row[col] == ("" if f"{hw}/return" not in m else f"{m[f'{hw}/return']:.6g}")


@pytest.mark.timeout(300)
def test_resume_restores_learning_rate_normalisers_and_iteration(tmp_path):
    env = sim.make_env("cartpole_swingup", "cartpole", 64, seed=0)
    r = runner(tmp_path, [env], num_steps_per_env=8)
    r.learn(3)
    path = r.save()
    fresh = runner(tmp_path / "b", [sim.make_env("cartpole_swingup", "cartpole", 64, seed=0)], num_steps_per_env=8)
    fresh.resume(path)
    assert fresh.iteration == 3 and fresh.trunk_version == 3
    assert fresh.ppo.learning_rate == r.ppo.learning_rate
    norm_a, norm_b = r.policy.stems["cartpole"].normalizer, fresh.policy.stems["cartpole"].normalizer
    assert torch.equal(norm_a.mean, norm_b.mean) and torch.equal(norm_a.count, norm_b.count)
    opt_a, opt_b = r.ppo.optimizer.state_dict(), fresh.ppo.optimizer.state_dict()
    assert torch.equal(opt_a["state"][0]["exp_avg"], opt_b["state"][0]["exp_avg"])
    fresh.learn(1)
    assert fresh.iteration == 4
    assert load_training_state(fresh.save())["iteration"] == 4


@pytest.mark.timeout(300)
def test_nan_stops_training_and_leaves_the_last_good_checkpoint_intact(tmp_path):
    env = sim.make_env("cartpole_swingup", "cartpole", 32, seed=0)
    r = runner(tmp_path, [env], num_steps_per_env=8)
    r.learn(1)
    good = r.save()
    good_state = {k: v.clone() for k, v in r.policy.state_dict().items()}
    with torch.no_grad():
        next(r.policy.trunk.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="intact"):
        r.learn(1)
    loaded, _ = load_checkpoint(good)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, good_state[k]), k


@pytest.mark.timeout(400)
def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    bin_dir = Path(sys.executable).parent
    cmd = [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node=2", str(bin_dir / "fleet-train"),
           "iterations=2", "sim.num_envs=16", "policy=small", "logger=none", "algorithm.num_steps_per_env=8",
           f"output_dir={tmp_path}/out"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=360,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "2 process(es)" in res.stdout
    assert "2 ranks hold identical weights: True" in res.stdout
    _, manifest = load_checkpoint(tmp_path / "out" / "checkpoints" / "latest")
    assert manifest["trunk_version"] == 2


@pytest.mark.timeout(300)
def test_seeded_training_is_reproducible_on_cpu(tmp_path):
    def run():
        env = sim.make_env("cartpole_swingup", "cartpole", 32, seed=5)
        r = PretrainRunner([env], SMALL, PPOConfig(num_steps_per_env=8), tmp_path, NullLogger(),
                           checkpoint_every=1000, seed=5)
        r.learn(3)
        return r.policy.state_dict()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.timeout(300)
def test_rollout_videos_reach_an_offline_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    from shared_policy.tracking import WandbLogger

    logger = WandbLogger("fleet-test", "train", {})
    env = sim.make_env("cartpole_swingup", "cartpole", 16, seed=0)
    r = PretrainRunner([env], SMALL, PPOConfig(num_steps_per_env=4), tmp_path / "out", logger,
                       checkpoint_every=1000, video_every=1, video_steps=12)
    r.learn(1)
    logger.close()
    gifs = list(tmp_path.rglob("cartpole_rollout_1.gif"))
    assert gifs and gifs[0].read_bytes()[:6] == b"GIF89a"
    from PIL import Image

    assert Image.open(gifs[0]).n_frames == 12


def test_policy_and_rollout_storage_live_on_the_envs_device_and_mixed_devices_are_refused(tmp_path):
    env = sim.make_env("cartpole_swingup", "cartpole", 8, seed=0)
    r = runner(tmp_path, [env])
    assert r.device == env.device
    assert {p.device for p in r.policy.parameters()} == {env.device}
    assert r.ppo.storage["cartpole"].obs.device == env.device
    other = sim.make_env("cartpole_swingup", "cartpole_long", 8, seed=0, device="cpu:0")
    with pytest.raises(ValueError, match="share a device"):
        runner(tmp_path / "mixed", [env, other])
