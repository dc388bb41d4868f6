import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from configs import CONFIG_DIR
from fleet.config import register_configs as register_hub
from fleet.demo.config import register_configs as register_demo
from hardware import available_profiles, profile_from_config
from hardware.tasks import TASKS
from robot_agent.config import register_configs as register_agent
from sim.app_config import register_configs as register_sim
from sim.config import task_config_from

register_sim()
register_hub()
register_demo()
register_agent()


@pytest.fixture()
def hydra_dir():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        yield


@pytest.mark.parametrize("app", ["demo", "train", "eval", "hub", "agent"])
def test_every_app_config_composes(hydra_dir, app):
    # output_dir defaults to ${hydra:runtime.output_dir}, which only a running Hydra job resolves
    cfg = compose(app, overrides={"train": ["output_dir=/tmp/x"], "demo": ["run_dir=/tmp/x"]}.get(app, []))
    assert OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_config_composes_onto_its_schema(hydra_dir, task):
    cfg = compose("train", overrides=[f"task={task}"])
    assert cfg.task.name == task
    assert OmegaConf.get_type(cfg.task) is TASKS[task].config_cls
    task_config_from(TASKS[task].config_cls, cfg.task)


def test_every_hardware_profile_composes_and_several_can_be_chosen(hydra_dir):
    names = available_profiles()
    cfg = compose("train", overrides=[f"hardware=[{','.join(names)}]"])
    assert list(cfg.hardware) == names
    for name in names:
        assert profile_from_config(cfg.hardware[name]).name == name


def test_package_data_ships_the_config_tree():
    assert (CONFIG_DIR / "train.yaml").is_file() and (CONFIG_DIR / "hardware" / "go2_like.yaml").is_file()


@pytest.mark.parametrize(("override", "key"), [
    ("task.randomization.frction=[1,2]", "task.randomization.frction"),
    ("sim.num_envs=many", "sim.num_envs"),
    ("task.episode_length_s=long", "task.episode_length_s"),
    ("iteratons=5", "iteratons"),
])
def test_wrong_key_or_value_is_refused_naming_the_key(hydra_dir, override, key):
    with pytest.raises(ConfigCompositionException, match=key.replace(".", "\\.")):
        compose("train", overrides=[override])


def test_unknown_hardware_option_lists_what_exists(hydra_dir):
    with pytest.raises(MissingConfigException, match="hardware/spot"):
        compose("train", overrides=["hardware=[spot]"])


def test_multirun_sweep_composes_each_job(hydra_dir):
    for task in ("reach", "locomotion"):
        assert compose("train", overrides=[f"task={task}"]).task.name == task


@pytest.mark.parametrize("group", ["policy", "algorithm", "logger"])
def test_every_option_of_the_training_groups_composes_onto_its_schema(hydra_dir, group):
    options = sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
    assert options
    for option in options:
        cfg = compose("train", overrides=[f"{group}={option}", "output_dir=/tmp/x"])
        OmegaConf.to_object(cfg[group])  # typed: a wrong key or type would have failed composition


def test_wrong_policy_value_is_refused_naming_the_key(hydra_dir):
    with pytest.raises(ConfigCompositionException, match="policy.latent_dim"):
        compose("train", overrides=["policy.latent_dim=wide"])
