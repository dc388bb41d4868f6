"""The agent's config as robot-agent composes it: hardware=<type> selects one profile, as in the README."""

import pytest
from hydra import compose, initialize_config_dir

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
