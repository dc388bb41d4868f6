"""fleet-learn's structured config carries the same defaults as its yaml, so a LearnConfig built without Hydra
behaves as the command does."""

from __future__ import annotations

from omegaconf import OmegaConf

from configs import CONFIG_DIR
from fleet.learner_config import LearnConfig
from shared_policy.rebase import RebaseConfig


def test_learn_config_built_without_hydra_rebases_as_learn_yaml_says():
    yaml_target = OmegaConf.load(CONFIG_DIR / "learn.yaml").rebase.target
    assert LearnConfig().rebase.target == yaml_target == "residual"


def test_a_rebase_config_still_takes_the_merged_target():
    cfg = RebaseConfig(target="merged")
    cfg.validate()
    assert cfg.target == "merged"
