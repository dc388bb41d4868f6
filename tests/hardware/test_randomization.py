import numpy as np
import pytest

from hardware.randomization import RandomizationConfig, RandomizationError, nominal_params, sample_params


def test_samples_stay_inside_their_ranges():
    cfg = RandomizationConfig(friction=[0.5, 1.25], latency_steps=[1, 3], com_offset=[-0.02, 0.02])
    p = sample_params(np.random.default_rng(0), cfg, 1000)
    assert p.friction.min() >= 0.5 and p.friction.max() <= 1.25
    assert set(np.unique(p.latency_steps)) == {1, 2, 3}
    assert np.abs(p.com_offset).max() <= 0.02


def test_disabled_randomization_gives_nominal_values():
    p = sample_params(np.random.default_rng(0), RandomizationConfig(enabled=False, friction=[0.1, 5.0]), 10)
    assert (p.friction == 1.0).all() and (p.latency_steps == 0).all()
    assert np.array_equal(nominal_params(3).privileged(), np.zeros((3, 12), dtype=np.float32))


@pytest.mark.parametrize(("key", "value", "match"), [
    ("friction", [1.5, 0.5], "friction: need finite low <= high"),
    ("mass_scale", [0.0, 1.0], "mass_scale: a scale must be > 0"),
    ("latency_steps", [-1, 2], "latency_steps: must be >= 0"),
    ("obs_noise", -1.0, "obs_noise: must be >= 0"),
    ("kp_scale", [1.0], "kp_scale: expected \\[low, high\\]"),
])
def test_out_of_range_config_names_the_key(key, value, match):
    cfg = RandomizationConfig(**{key: value})
    with pytest.raises(RandomizationError, match=match):
        cfg.validate()
