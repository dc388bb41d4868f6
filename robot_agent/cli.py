"""robot-agent: the robot daemon's Hydra app, plus the operator's commands.

    robot-agent checkpoint=outputs/.../checkpoints/latest hardware=cartpole task=cartpole_swingup
    robot-agent status [STATE_DIR]        print the running agent's status (default: agent_state)
    robot-agent estop [STATE_DIR]         engage the e-stop (it latches)
    robot-agent clear-estop [STATE_DIR]   release it

Signals: SIGTERM/SIGINT finish the episode (abort it after ``shutdown_timeout_s``, or at a second
signal), flush the spool and exit 0; SIGUSR1 engages the e-stop.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from configs import CONFIG_DIR
from hardware.profile import ProfileError
from hardware.randomization import RandomizationError
from hardware.tasks import TaskConfigError, task_class
from hardware.tasks.config import task_config_from
from robot_agent.config import AgentConfig, register_configs, selected_profile

register_configs()
EXIT_OK, EXIT_REFUSED = 0, 2
COMMANDS = ("status", "estop", "clear-estop")


def run_agent(cfg: DictConfig) -> int:
    """Build and run the agent from a composed config; returns the process exit code."""
    from robot_agent.agent import ESTOP_FILE, AgentStartupError, RobotAgent
    from shared_policy.tracking import open_logger

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if OmegaConf.is_missing(cfg, "checkpoint"):
        print("robot-agent: refusing to start: no policy given; set checkpoint=<checkpoint dir>", file=sys.stderr)
        return EXIT_REFUSED
    try:
        task_cfg = task_config_from(task_class(cfg.task.name).config_cls, cfg.task)
        profile = selected_profile(cfg.hardware)
        agent_cfg = OmegaConf.to_object(cfg)
        assert isinstance(agent_cfg, AgentConfig)
        agent_cfg.hardware = profile
        logger = open_logger(cfg.logger, job=f"agent-{cfg.robot_id}", config=OmegaConf.to_container(cfg, resolve=True))
        agent = RobotAgent(agent_cfg, task_cfg, logger)
    except (AgentStartupError, ProfileError, TaskConfigError, RandomizationError, ValueError) as exc:
        print(f"robot-agent: refusing to start: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    signal.signal(signal.SIGTERM, lambda *_: agent.request_stop())
    signal.signal(signal.SIGINT, lambda *_: agent.request_stop())
    signal.signal(signal.SIGUSR1, lambda *_: agent.safe.estop.trigger("signal SIGUSR1"))
    print(f"[agent {cfg.robot_id}] {agent.profile.name} at {agent.profile.control_hz:g} Hz, trunk "
          f"v{agent.runtime.trunk_version}, adapter v{agent.runtime.adapter_version}; state in {agent.state_dir} "
          f"(e-stop: touch {agent.state_dir / ESTOP_FILE})", flush=True)
    agent.run()
    return EXIT_OK


def control_command(command: str, args: list[str]) -> int:
    """status / estop / clear-estop against a state directory."""
    from robot_agent.agent import ESTOP_FILE, STATUS_FILE
    from robot_agent.status import status_line

    state_dir = Path(args[0] if args else "agent_state")
    if command == "status":
        path = state_dir / STATUS_FILE
        if not path.is_file():
            print(f"robot-agent status: no status in {state_dir} (is the agent running there?)", file=sys.stderr)
            return 1
        s = json.loads(path.read_text())
        print(status_line(s))
        print(json.dumps(s, indent=1))
        return 0
    estop = state_dir / ESTOP_FILE
    if command == "estop":
        state_dir.mkdir(parents=True, exist_ok=True)
        estop.touch()
        print(f"e-stop engaged ({estop}); it latches until 'robot-agent clear-estop {state_dir}'")
        return 0
    estop.unlink(missing_ok=True)
    estop.with_name(ESTOP_FILE + ".clear").touch()
    print(f"e-stop clear requested ({state_dir})")
    return 0


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="agent")
def _hydra_main(cfg: DictConfig) -> None:
    sys.exit(run_agent(cfg))


def agent_main() -> None:
    """Console entry point: an operator command, or the daemon (a Hydra app)."""
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        sys.exit(control_command(sys.argv[1], sys.argv[2:]))
    _hydra_main()


if __name__ == "__main__":
    agent_main()
