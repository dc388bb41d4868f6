"""The learner tests' shared trunk, pretrained once per session."""

from __future__ import annotations

import pytest

from shared_policy.checkpoint import save_checkpoint
from tests.fleet.learner.experience import pretrained_trunk


@pytest.fixture(scope="session")
def trunk(tmp_path_factory):
    """The fleet's sim-pretrained cart-pole trunk (policy, checkpoint saved as trunk version 1). Tests copy it
    into their own trunk stores and never change it."""
    tmp = tmp_path_factory.mktemp("trunk")
    policy = pretrained_trunk(tmp / "pretrain")
    return policy, save_checkpoint(tmp / "v1", policy, trunk_version=1)
