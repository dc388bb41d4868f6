"""The command lines of the demo's parts: each an installed console script with Hydra overrides, as a person
would type it (every one is printed at the top of its log)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from fleet.demo.config import DemoConfig
from fleet.demo.record import SimReturn
from fleet.demo.units import Unit

BIN = Path(sys.executable).parent  # the console scripts installed beside this interpreter
PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")  # strings Hydra reads as themselves, unquoted
EVAL_LINE = re.compile(r"\[eval\] \S+ on (\S+) \(trunk v\d+\): mean return (\S+) \+- (\S+) \(95% CI, (\d+) episodes\)")


def script(name: str) -> str:
    """The path of an installed console script."""
    return str(BIN / name)


def hydra_value(value: Any) -> str:
    """A plain value (dict, list, number, bool, string) in Hydra's override grammar."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if PLAIN.fullmatch(str(value)):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def logger_override(cfg: DemoConfig) -> str:
    """W&B (offline unless WANDB_MODE says otherwise) or none, for every part."""
    return "logger=wandb" if cfg.wandb else "logger=none"


def pretrain_command(cfg: DemoConfig, run: Path) -> list[str]:
    """Phase 1: fleet-train on every demo type; writes run/pretrain/{checkpoints/latest,curve.csv}."""
    p = cfg.pretrain
    return [script("fleet-train"), f"task={cfg.task_name}", f"hardware={hydra_value(cfg.types)}",
            f"iterations={p.iterations}", f"sim.num_envs={p.num_envs}", f"sim.seed={p.seed}",
            f"checkpoint_every={p.iterations}", f"output_dir={run / 'pretrain'}",
            f"hydra.run.dir={run / 'pretrain' / 'hydra'}", logger_override(cfg), "logger.run_name=pretrain",
            *p.overrides]


def eval_command(cfg: DemoConfig, run: Path, checkpoint: Path) -> list[str]:
    """Phase 2: fleet-eval of the pretrained trunk per type, on the episodes the units run."""
    o = cfg.oracle
    return [script("fleet-eval"), f"task={cfg.task_name}", f"hardware={hydra_value(cfg.types)}",
            f"checkpoint={checkpoint}", f"episodes={o.episodes}", f"sim.num_envs={o.num_envs}",
            f"task.episode_length_s={cfg.agents.episode_length_s}", f"hydra.run.dir={run / 'logs' / 'hydra-eval'}"]


def parse_eval(log: str) -> dict[str, SimReturn]:
    """fleet-eval's per-type lines as SimReturn."""
    return {m[1]: SimReturn(float(m[2]), float(m[3]), int(m[4])) for m in EVAL_LINE.finditer(log)}


def hub_command(cfg: DemoConfig, run: Path, port: int, canaries: list[str]) -> list[str]:
    """Phase 3: the hub, CURVE on, its store in run/hub, the demo's canaries."""
    h = cfg.hub
    return [script("fleet-hub"), f"bind=tcp://127.0.0.1:{port}", f"storage_dir={run / 'hub'}",
            f"security.keys_dir={run / 'keys'}", "security.mode=curve", f"rollout.canary_robots={hydra_value(canaries)}",
            f"rollout.min_episodes={h.min_episodes}", f"rollout.history_episodes={h.history_episodes}",
            f"rollout.tolerance={h.tolerance}", f"metrics.wandb={hydra_value(cfg.wandb)}",
            f"hydra.run.dir={run / 'logs' / 'hydra-hub'}", *h.overrides]


def agent_command(cfg: DemoConfig, run: Path, port: int, unit: Unit, checkpoint: Path) -> list[str]:
    """Phase 4: one robot agent daemon on its stand-in unit (real time, its own gap and seed), adapting on-robot
    and streaming to the hub."""
    a, home = cfg.agents, run / "agents" / unit.robot_id
    return [script("robot-agent"), f"checkpoint={checkpoint}", f"hardware={unit.hardware}", f"task={cfg.task_name}",
            f"task.episode_length_s={a.episode_length_s}", f"robot_id={unit.robot_id}",
            f"state_dir={home / 'state'}", f"trunk_dir={home / 'trunks'}", "driver.options.realtime=true",
            f"driver.options.seed={unit.seed}", f"+driver.options.gap={hydra_value(unit.gap)}",
            f"seed={unit.seed}", "adapter.enabled=true", "adapter.learn=true",
            f"adapter.steps_per_update={a.steps_per_update}", f"adapter.guard_episodes={a.guard_episodes}",
            f"adapter_preset={a.adapter_preset}", "uplink.enabled=true", f"uplink.endpoint=tcp://127.0.0.1:{port}",
            f"uplink.security.keys_dir={run / 'keys' / 'robots' / unit.robot_id}", "uplink.backoff_max_s=2.0",
            f"uplink.drain_on_stop_s={a.drain_on_stop_s}", f"stop_timeout_s={a.drain_on_stop_s + 8.0}",
            f"status_every_s={a.status_every_s}", f"logger.backend={'wandb' if cfg.wandb else 'none'}",
            f"logger.run_name={unit.robot_id}", f"hydra.run.dir={run / 'logs' / ('hydra-' + unit.robot_id)}",
            *a.overrides]


def learn_command(cfg: DemoConfig, run: Path) -> list[str]:
    """Phase 6: one fleet-learn round on the hub's store; its candidate goes to the hub's canaries."""
    lc = cfg.learn
    tasks = {hw: cfg.task_name for hw in cfg.types}
    return [script("fleet-learn"), f"storage_dir={run / 'hub'}", f"output_dir={run / 'learn'}", "rounds=1",
            f"updates={lc.updates}", f"sim_fraction={lc.sim_fraction}", f"batch_size={lc.batch_size}",
            f"gate.tasks={hydra_value(tasks)}", f"gate.episodes={lc.gate_episodes}",
            f"gate.tolerance={lc.gate_tolerance}", f"learner.learning_rate={lc.learning_rate}",
            f"rebase.steps={lc.rebase_steps}",
            "publish=true", "publish_candidate=true", "log_every=5", logger_override(cfg),
            "logger.run_name=learn", f"hydra.run.dir={run / 'logs' / 'hydra-learn'}", *lc.overrides]
