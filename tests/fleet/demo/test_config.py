"""fleet-demo's config as Hydra composes it: every bad value refused naming its key; the named variants compose."""

from __future__ import annotations

import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from configs import CONFIG_DIR, group_options
from fleet.demo.config import DemoConfig, register_configs
from fleet.demo.units import outside_range, plan_units, training_ranges

register_configs()


def demo_config(*overrides: str, name: str = "demo") -> DemoConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = OmegaConf.to_object(compose(name, overrides=["run_dir=/tmp/x", *overrides]))
    assert isinstance(cfg, DemoConfig)
    return cfg


@pytest.mark.parametrize(("override", "key"), [
    ("robots=3", "robots"), ("hardware=[cartpole]", "hardware"), ("hardware=[cartpole,cartpole]", "hardware"),
    ("pretrain.iterations=0", "pretrain.iterations"), ("agents.adapt_s=-1", "agents.adapt_s"),
    ("agents.guard_episodes=1", "agents.guard_episodes"), ("learn.sim_fraction=1.0", "learn.sim_fraction"),
    ("hub.canaries=[unit-9]", "hub.canaries"), ("hub.canaries=[unit-0,unit-2]", "hub.canaries"),
    ("faults.agent=robot-x", "faults.agent"),
    ("hub.port=70000", "hub.port"), ("learn.gate_tolerance=1.5", "learn.gate_tolerance"), ("faults.down_s=-2", "faults.down_s"),
    ("report_timeout_s=0", "report_timeout_s"), ("agents.adapter_preset=swarm", "agents.adapter_preset"),
    ("agents.adapter_preset=deployed", "agents.adapter_preset"),  # its agents would start with learning on
    ("agents.overrides=['adapter_preset=deployed']", "agents.overrides"),  # past the check above, silently
])
def test_a_bad_value_is_refused_naming_its_key(override, key):
    cfg = demo_config(override)
    with pytest.raises(ValueError, match=rf"^{re.escape(key)}:"):
        cfg.validate()


def test_the_defaults_and_the_overrides_a_user_types_are_valid():
    cfg = demo_config("robots=8", "agents.adapt_s=300")
    cfg.validate()
    assert cfg.robots == 8 and cfg.agents.adapt_s == 300.0
    units = plan_units(cfg)
    assert [u.hardware for u in units[:4]] == ["cartpole", "cartpole_pivot"] * 2  # types alternate
    assert [u.robot_id for u in units if u.canary] == ["unit-0", "unit-1"]  # one canary per type by default
    assert len({u.seed for u in units}) == 8  # each unit its own draw of the gap


def test_the_locomotion_variant_composes_on_two_quadrupeds_with_reality_gaps():
    cfg = demo_config(name="demo_locomotion")
    cfg.validate()
    assert cfg.task_name == "locomotion" and cfg.types == ["go1_like", "go2_like"]
    assert cfg.agents.adapt_s > demo_config().agents.adapt_s  # the longer variant
    assert {u.hardware for u in plan_units(cfg)} == {"go1_like", "go2_like"}


def test_a_type_without_a_reality_gap_is_a_config_error_naming_it():
    cfg = demo_config("hardware=[cartpole,arm7]")
    with pytest.raises(ValueError, match="arm7.*UNIT_SETUPS"):
        plan_units(cfg)


def test_outside_training_range_is_computed_from_the_task_randomisation():
    trained = training_ranges("cartpole_swingup")
    assert trained["motor_strength"] == [0.8, 1.2] and trained["kp_scale"] == [1.0, 1.0]  # a default: not randomised
    gap = {"physics": {"motor_strength": [0.9, 1.1], "mass_scale": [1.0, 1.3], "latency_steps": [0, 1]}}
    assert outside_range(gap, trained) == ["mass_scale"]  # reaches past 1.2; the others lie within
    with pytest.raises(ValueError, match="gap.physics.warp"):
        outside_range({"physics": {"warp": [1, 2]}}, trained)
    cartpole = plan_units(demo_config())[0]
    assert cartpole.outside_training_range == ["damping_scale", "latency_steps", "mass_scale", "motor_strength"]


def test_the_demos_robot_agents_compose_with_the_fleet_adapter_preset(tmp_path):
    # what the daemon gets from the demo's own command line, composed as robot-agent composes it
    from fleet.demo.commands import agent_command
    from robot_agent.config import register_configs as register_agent_configs

    register_agent_configs()
    cfg = demo_config()
    unit = plan_units(cfg)[0]
    argv = agent_command(cfg, tmp_path, 5555, unit, tmp_path / "v1")[1:]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        agent = OmegaConf.to_object(compose("agent", overrides=[a for a in argv if not a.startswith("hydra.")]))
    assert cfg.agents.adapter_preset == "fleet"
    assert agent.adapter.learn_log_std is False and agent.adapter.guard_floor == 0.1


@pytest.mark.parametrize("preset", group_options("adapter_preset"))
def test_every_preset_the_demo_accepts_gives_agents_that_validate(tmp_path, preset):
    # a preset the demo accepts must not compose, with the demo's own overrides, into an agent that refuses to start
    from fleet.demo.commands import agent_command
    from robot_agent.config import register_configs as register_agent_configs

    register_agent_configs()
    cfg = demo_config(f"agents.adapter_preset={preset}")
    try:
        cfg.validate()
    except ValueError as e:
        assert str(e).startswith("agents.adapter_preset:")
        return
    argv = agent_command(cfg, tmp_path, 5555, plan_units(cfg)[0], tmp_path / "v1")[1:]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        agent = OmegaConf.to_object(compose("agent", overrides=[a for a in argv if not a.startswith("hydra.")]))
    agent.validate()
