import pytest
import torch
from torch.distributions import Normal

from shared_policy.config import PolicyConfig
from shared_policy.policy import FleetPolicy, HardwareSpec

SPECS = {
    "arm2": HardwareSpec("arm2", num_obs=12, num_actions=2, num_critic_obs=24,
                         obs_layout=(("joint_pos_rel", 2), ("joint_vel", 2), ("ee_pos", 3), ("ee_to_target", 3),
                                     ("last_action", 2)), action_names=("shoulder", "elbow")),
    "arm7": HardwareSpec("arm7", num_obs=27, num_actions=7, num_critic_obs=39),
}


@pytest.fixture()
def policy():
    torch.manual_seed(0)  # the same weights whichever tests ran before (a test's margins were order-dependent)
    return FleetPolicy(PolicyConfig(latent_dim=32, trunk_hidden=[32], stem_hidden=[32], critic_hidden=[32]), SPECS)


def reference_normal(policy: FleetPolicy, hardware: str, obs, adapter=None) -> Normal:
    """torch.distributions' Gaussian of the (adapted) actor at ``obs``: an independent check of our own density."""
    mean = policy.action_mean(hardware, obs, adapter)
    return Normal(mean, policy.log_std(hardware, adapter).exp().expand_as(mean))
