"""The console scripts as a user runs them: real processes, real Hydra, real exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def user_env(**extra):
    """A user's shell: no MUJOCO_GL (the package must choose), no display."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}
    return {**env, **extra}


def run(script, *args, cwd):
    env = user_env(WANDB_MODE="disabled")
    return subprocess.run([str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(120)
def test_rendering_works_in_a_fresh_interpreter_without_mujoco_gl(tmp_path):
    code = ("import sim; from sim.render import EnvRenderer; "
            "r = EnvRenderer(sim.make_env('cartpole_swingup', 'cartpole', 1)); print(r.frame(0).std() > 5); r.close()")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=user_env(), capture_output=True, text=True,
                         timeout=100, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "True"


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("script", "override", "key"), [
    ("fleet-train", "sim.num_envz=3", "num_envz"),
    ("fleet-demo", "robots=many", "robots"),
    ("fleet-eval", "episodes=some", "episodes"),
    ("fleet-hub", "bnd=tcp://x", "bnd"),
    ("robot-agent", "robot_idd=3", "robot_idd"),
])
def test_wrong_config_exits_non_zero_naming_the_key(tmp_path, script, override, key):
    res = run(script, override, cwd=tmp_path)
    assert res.returncode != 0
    assert key in res.stderr


@pytest.mark.timeout(120)
def test_wrong_hardware_value_exits_non_zero_naming_the_key(tmp_path):
    res = run("fleet-train", "hardware.cartpole.control_hz=fast", cwd=tmp_path)
    assert res.returncode == 2
    assert "control_hz" in res.stderr


@pytest.mark.timeout(120)
def test_hub_without_keys_refuses_to_start_and_says_how_to_make_them(tmp_path):
    res = run("fleet-hub", f"storage_dir={tmp_path}/data", cwd=tmp_path)
    assert res.returncode == 2
    assert "security.keys_dir" in res.stderr and "fleet-keys init fleet_keys" in res.stderr


@pytest.mark.timeout(120)
def test_hub_with_keys_starts_says_how_it_listens_and_stops_by_itself_after_run_for_s(tmp_path):
    assert run("fleet-keys", "init", "keys", cwd=tmp_path).returncode == 0
    res = run("fleet-hub", "security.keys_dir=keys", "storage_dir=data", "bind=tcp://127.0.0.1:*", "run_for_s=1",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "listening on tcp://127.0.0.1:" in res.stdout and "CURVE (keys keys, 0 robots enrolled)" in res.stdout
    assert "fleet-hub: stopped" in res.stdout and (tmp_path / "data" / "experience.sqlite").is_file()


@pytest.mark.timeout(120)
def test_hub_status_without_a_registry_exits_1_and_says_why(tmp_path):
    res = run("fleet-hub", "status", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert res.returncode == 1
    assert "no registry" in res.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("args", "message"), [
    ((), "set checkpoint="),
    (("checkpoint=/no/such/dir",), "is not a checkpoint"),
    (("checkpoint=/no/such/dir", "safety.watchdog_periods=-1"), "safety.watchdog_periods"),
    (("checkpoint=/no/such/dir", "spool.when_full=overwrite"), "spool.when_full"),
    (("checkpoint=/no/such/dir", "control_priority=120"), "control_priority"),
    (("checkpoint=/no/such/dir", "adapter.replay_updates=0"), "adapter.replay_updates"),
    (("checkpoint=/no/such/dir", "adapter.drift_kl=-0.1"), "adapter.drift_kl"),
    (("checkpoint=/no/such/dir", "adapter.guard_floor=1.5"), "adapter.guard_floor"),
])
def test_robot_agent_refuses_to_start_and_says_why(tmp_path, args, message):
    res = run("robot-agent", *args, "logger.backend=none", cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr


TINY = ["sim.num_envs=16", "policy=small", "logger=none", "algorithm.num_steps_per_env=8"]


@pytest.mark.timeout(400)
def test_train_then_eval_prints_return_with_a_confidence_interval(tmp_path):
    res = run("fleet-train", "iterations=3", *TINY, f"output_dir={tmp_path}/run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "[train] it 3/3" in res.stdout and "steps/s" in res.stdout and "ETA" in res.stdout
    ckpt = tmp_path / "run" / "checkpoints" / "latest"
    res = run("fleet-eval", f"checkpoint={ckpt}", "episodes=8", "sim.num_envs=8", "task.episode_length_s=2",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "mean return" in res.stdout and "95% CI, 8 episodes" in res.stdout and "success rate" in res.stdout


@pytest.mark.timeout(400)
def test_eval_refuses_a_corrupted_checkpoint(tmp_path):
    res = run("fleet-train", "iterations=1", *TINY, f"output_dir={tmp_path}/run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = tmp_path / "run" / "checkpoints" / "latest"
    head = ckpt / "hardware" / "cartpole.safetensors"
    head.write_bytes(head.read_bytes()[:-3] + b"xyz")
    res = run("fleet-eval", f"checkpoint={ckpt}", "episodes=2", cwd=tmp_path)
    assert res.returncode == 2
    assert "cartpole.safetensors is corrupted" in res.stderr


@pytest.mark.timeout(400)
def test_eval_refuses_a_checkpoint_of_other_hardware(tmp_path):
    res = run("fleet-train", "iterations=1", *TINY, f"output_dir={tmp_path}/run", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    res = run("fleet-eval", f"checkpoint={tmp_path}/run/checkpoints/latest", "hardware=[cartpole_long]",
              cwd=tmp_path)
    assert res.returncode == 2 and "no hardware type 'cartpole_long'" in res.stderr


@pytest.mark.timeout(400)
def test_multirun_sweep_runs_each_job_into_its_own_directory(tmp_path):
    res = run("fleet-train", "--multirun", "iterations=1", *TINY, "algorithm.entropy_coef=0.0,0.01",
              f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    for job in ("0", "1"):
        assert (tmp_path / "sweep" / job / "checkpoints" / "latest" / "manifest.json").is_file()
