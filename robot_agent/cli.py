"""robot-agent: the robot daemon's Hydra app, plus the operator's commands.

    robot-agent checkpoint=outputs/.../checkpoints/latest hardware=cartpole task=cartpole_swingup
    robot-agent status [STATE_DIR]        print the running agent's status (default: agent_state)
    robot-agent estop [STATE_DIR]         engage the e-stop (it latches)
    robot-agent clear-estop [STATE_DIR]   release it

Signals: SIGTERM/SIGINT finish the episode (abort it after ``shutdown_timeout_s``, or at a second
signal), then flush the spool and stop every part within ``stop_timeout_s``, and exit 0; SIGUSR1
engages the e-stop. Exit codes: 0 stopped as asked, 2 refused to start, 3 stopped on a fault (the
spool writer died twice: nothing could be stored), which a service manager restarts.

``robot-agent status`` exits 0 while the agent runs with every part alive, or after it stopped as asked
(its final status); 1 when there is no status, a part of it is dead, it stopped on a fault, or it is gone
without a final status (killed or crashed).
"""

from __future__ import annotations

import json
import logging
import queue
import signal
import sys
import time
from logging.handlers import QueueHandler, QueueListener
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from configs import CONFIG_DIR
from fleet.process_liveness import process_exists
from hardware.profile import ProfileError
from hardware.randomization import RandomizationError
from hardware.tasks import TaskConfigError, task_class
from hardware.tasks.config import task_config_from
from robot_agent.config import AgentConfig, register_configs, selected_profile

register_configs()
EXIT_OK, EXIT_REFUSED, EXIT_FAULT = 0, 2, 3
COMMANDS = ("status", "estop", "clear-estop")


def log_from_a_thread() -> QueueListener:
    """Route every log record through a queue to a listener thread that writes it: a thread that logs (the
    control thread included) only formats the record and puts it on the queue, and never writes stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    records: queue.SimpleQueue = queue.SimpleQueue()
    listener = QueueListener(records, handler)
    root = logging.getLogger()
    root.handlers[:] = [QueueHandler(records)]
    root.setLevel(logging.INFO)
    listener.start()
    return listener


def run_agent(cfg: DictConfig) -> int:
    """Build and run the agent from a composed config; returns the process exit code."""
    listener = log_from_a_thread()
    try:
        return _run_agent(cfg)
    finally:
        listener.stop()


def _run_agent(cfg: DictConfig) -> int:
    from robot_agent.agent import ESTOP_FILE, AgentStartupError, RobotAgent
    from shared_policy.tracking import open_logger

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
    status = agent.run()
    return EXIT_FAULT if status["fault"] else EXIT_OK


def control_command(command: str, args: list[str]) -> int:
    """status / estop / clear-estop against a state directory."""
    from robot_agent.agent import ESTOP_FILE, STATUS_FILE
    from robot_agent.status import status_line, unhealthy

    state_dir = Path(args[0] if args else "agent_state")
    if command == "status":
        path = state_dir / STATUS_FILE
        if not path.is_file():
            print(f"robot-agent status: no status in {state_dir} (is the agent running there?)", file=sys.stderr)
            return 1
        s = json.loads(path.read_text())
        print(status_line(s))
        print(json.dumps(s, indent=1))
        problems = unhealthy(s)
        if s.get("final"):  # stopped as asked: its last status stands (a fault is among the problems)
            print("robot-agent status: the agent has stopped; this is its final status", file=sys.stderr)
        elif not process_exists(int(s.get("pid", 0))):
            problems.append(f"the agent (pid {s.get('pid')}) is gone without a final status: it was killed or "
                            f"crashed {time.time() - float(s.get('time', 0)):.0f} s after this status")
        for p in problems:
            print(f"robot-agent status: {p}", file=sys.stderr)
        return 1 if problems else 0
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
