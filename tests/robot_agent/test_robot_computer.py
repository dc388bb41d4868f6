"""A robot computer with a real (non-MuJoCo) driver: the agent runs there without MuJoCo or a GL back-end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robot_agent.agent import STATUS_FILE

ROOT = Path(__file__).resolve().parents[2]
DRIVER = "tests.robot_agent.kinematic_cartpole:KinematicCartpoleDriver"

# The agent's own process, as `robot-agent` runs it: the CLI's Hydra app end to end, then what it loaded.
AGENT_SCRIPT = """
import json, os, sys
import hardware, robot_agent.agent, robot_agent.cli, robot_agent.parts  # everything the daemon is made of
from robot_agent.cli import agent_main

if __name__ == "__main__":
    sys.argv = ["robot-agent", *json.loads(sys.argv[1])]
    try:
        agent_main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    print("LOADED " + json.dumps({
        "exit": code,
        "mujoco": sorted(m for m in sys.modules if m == "mujoco" or m.startswith("mujoco.")),
        "sim": sorted(m for m in sys.modules if m == "sim" or m.startswith("sim.")),
        "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
    }))
"""


@pytest.mark.timeout(180)
def test_agent_with_a_non_mujoco_driver_imports_no_mujoco_and_sets_no_gl_backend(tmp_path, cartpole_checkpoint):
    # the checkpoint comes from sim (this test process); the agent's process below never imports it
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT)
    state = tmp_path / "state"
    overrides = [f"checkpoint={cartpole_checkpoint}", "hardware=cartpole", "task=cartpole_swingup",
                 f"state_dir={state}", f"driver.name={DRIVER}", "driver.options.realtime=false",
                 "max_episodes=1", "task.episode_length_s=1.0", "adapter.learn=false", "logger.backend=none",
                 f"hydra.run.dir={tmp_path / 'hydra'}"]
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}  # a robot's headless shell
    env["PYTHONPATH"] = str(ROOT)
    env["WANDB_MODE"] = "disabled"
    res = subprocess.run([sys.executable, str(script), json.dumps(overrides)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=150)
    loaded = [line for line in res.stdout.splitlines() if line.startswith("LOADED ")]
    assert loaded, f"the agent's process did not finish:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    seen = json.loads(loaded[-1][len("LOADED "):])
    assert seen["mujoco"] == [] and seen["sim"] == []
    assert seen["MUJOCO_GL"] is None
    assert seen["exit"] == 0, res.stderr[-4000:]
    status = json.loads((state / STATUS_FILE).read_text())
    assert status["episodes"] == 1 and status["steps"] == 50  # 1 s at 50 Hz on the kinematic cart-pole
