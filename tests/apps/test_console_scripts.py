"""The console scripts as a user runs them: real processes, real Hydra, real exit codes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(script, *args, cwd):
    env = {**os.environ, "WANDB_MODE": "disabled", "MUJOCO_GL": "egl"}
    return subprocess.run([str(BIN / script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=240, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(300)
def test_demo_runs_a_rollout_prints_throughput_and_writes_frames(tmp_path):
    res = run("fleet-demo", "steps=60", "sim.num_envs=16", "logger.backend=none", f"output_dir={tmp_path}/demo",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "env steps/s" in res.stdout
    assert (tmp_path / "demo" / "cartpole.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(300)
def test_demo_logs_an_offline_wandb_run_without_network(tmp_path):
    env_mode = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    res = subprocess.run([str(BIN / "fleet-demo"), "steps=10", "sim.num_envs=4", "render=false",
                          "hardware=[cartpole]", f"output_dir={tmp_path}/d"],
                         cwd=tmp_path, env={**os.environ, **env_mode}, capture_output=True, text=True, timeout=240,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("script", "override", "key"), [
    ("fleet-train", "sim.num_envz=3", "num_envz"),
    ("fleet-demo", "task.randomization.friction=oops", "friction"),
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
@pytest.mark.parametrize("script", ["fleet-train", "fleet-eval", "fleet-hub", "robot-agent"])
def test_unbuilt_apps_validate_config_and_say_so(tmp_path, script):
    res = run(script, cwd=tmp_path)
    assert res.returncode == 3
    assert "config OK" in res.stderr and "not built yet" in res.stderr
