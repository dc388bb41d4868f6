"""The agent's config as robot-agent composes it: hardware=<type> selects one profile, as in the README."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from configs import CONFIG_DIR
from hardware.profile import ProfileError, load_profile
from robot_agent.config import register_configs, selected_profile

register_configs()


@pytest.fixture()
def hydra_dir():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        yield


def test_hardware_override_selects_the_profile_the_agent_drives(hydra_dir):
    cfg = compose("agent", overrides=["hardware=cartpole_long", "task=cartpole_swingup"])
    assert selected_profile(cfg.hardware) == load_profile("cartpole_long")


def test_default_hardware_is_cartpole(hydra_dir):
    assert selected_profile(compose("agent").hardware).name == "cartpole"


def test_an_override_of_the_profile_reaches_the_profile_the_agent_drives(hydra_dir):
    cfg = compose("agent", overrides=["hardware=cartpole", "hardware.cartpole.actuator.action_scale=0.5"])
    assert selected_profile(cfg.hardware).actuator.action_scale == 0.5


def test_several_hardware_types_are_refused_naming_the_key(hydra_dir):
    cfg = compose("agent", overrides=["hardware=[cartpole,cartpole_long]"])
    with pytest.raises(ProfileError, match=r"^hardware: .*exactly one.*'cartpole', 'cartpole_long'"):
        selected_profile(cfg.hardware)


def test_a_wrong_profile_value_is_refused_naming_the_key(hydra_dir):
    cfg = compose("agent", overrides=["hardware.cartpole.control_hz=fast"])
    with pytest.raises(ProfileError, match=r"(?s)hardware\.cartpole.*control_hz"):
        selected_profile(cfg.hardware)


def test_a_name_still_selects_a_shipped_profile():
    assert selected_profile("go2_like") == load_profile("go2_like")


def test_uplink_overrides_compose_into_the_agents_uplink_config(hydra_dir):
    from omegaconf import OmegaConf

    from robot_agent.config import AgentUplinkConfig

    cfg = compose("agent", overrides=["checkpoint=/c", "uplink.enabled=true", "uplink.endpoint=tcp://127.0.0.1:7000",
                                      "uplink.security.keys_dir=/etc/robot_keys", "uplink.resend_s=3"])
    up = OmegaConf.to_object(cfg).uplink
    assert isinstance(up, AgentUplinkConfig) and up.enabled and up.endpoint == "tcp://127.0.0.1:7000"
    assert up.security.mode == "curve" and up.security.keys_dir == "/etc/robot_keys" and up.resend_s == 3
    up.validate()
    assert not OmegaConf.to_object(compose("agent", overrides=["checkpoint=/c"])).uplink.enabled  # off by default


def test_a_stop_timeout_too_short_for_the_spools_flush_is_refused_naming_the_key(hydra_dir):
    from omegaconf import OmegaConf

    from robot_agent.config import AgentConfig

    for value, refused in ((4.0, True), (5.0, False)):
        cfg = OmegaConf.to_object(compose("agent", overrides=[f"stop_timeout_s={value}", "checkpoint=ckpt"]))
        assert isinstance(cfg, AgentConfig)
        if refused:  # the writer's flush would get no time before the spool closes under it
            with pytest.raises(ValueError, match=r"^stop_timeout_s: 4\.0 is under 5\.0 s"):
                cfg.validate()
        else:
            cfg.validate()


def test_the_solo_adapter_preset_is_the_default_and_the_adapter_schemas_own_defaults(hydra_dir):
    from robot_agent.config import AdapterTrainingConfig, adapter_preset

    adapter = OmegaConf.to_object(compose("agent", overrides=["checkpoint=/c"])).adapter
    assert adapter.learn_log_std is True and adapter.guard_floor == 0.0
    # code that builds an AgentConfig without Hydra (tests, benchmarks) gets the daemon's default
    schema = AdapterTrainingConfig()
    assert {key: getattr(schema, key) for key in adapter_preset("solo")} == adapter_preset("solo")


def test_the_fleet_adapter_preset_holds_the_noise_and_floors_the_guard_and_an_override_still_wins(hydra_dir):
    adapter = OmegaConf.to_object(compose("agent", overrides=["checkpoint=/c", "adapter_preset=fleet"])).adapter
    assert adapter.learn_log_std is False and adapter.guard_floor == 0.1
    adapter = OmegaConf.to_object(compose("agent", overrides=["checkpoint=/c", "adapter_preset=fleet",
                                                              "adapter.guard_floor=0.2"])).adapter
    assert adapter.learn_log_std is False and adapter.guard_floor == 0.2


def test_the_deployed_adapter_preset_acts_on_mean_actions_without_learning_and_validates(hydra_dir):
    cfg = OmegaConf.to_object(compose("agent", overrides=["checkpoint=/c", "adapter_preset=deployed"]))
    assert cfg.adapter.enabled and not cfg.adapter.learn and not cfg.adapter.explore
    cfg.validate()  # learning off, so deterministic control is allowed
    with pytest.raises(ValueError, match="adapter.learn=true needs adapter.explore=true"):
        OmegaConf.to_object(compose("agent", overrides=["checkpoint=/c", "adapter_preset=deployed",
                                                        "adapter.learn=true"])).validate()


@pytest.mark.parametrize("name", ["solo", "fleet", "deployed"])
def test_applying_a_preset_in_code_sets_what_the_composed_daemon_gets(hydra_dir, name):
    from robot_agent.config import AdapterTrainingConfig, apply_adapter_preset

    composed = OmegaConf.to_object(compose("agent", overrides=["checkpoint=/c", f"adapter_preset={name}"])).adapter
    applied = AdapterTrainingConfig()
    apply_adapter_preset(applied, name)
    assert applied == composed


def test_an_unknown_adapter_preset_is_refused_naming_the_known_ones(hydra_dir):
    from hydra.errors import MissingConfigException

    from robot_agent.config import adapter_preset

    with pytest.raises(MissingConfigException, match="fleet"):
        compose("agent", overrides=["checkpoint=/c", "adapter_preset=swarm"])
    with pytest.raises(ValueError, match=r"^adapter_preset: no preset 'swarm' \(known: deployed, fleet, solo\)"):
        adapter_preset("swarm")
