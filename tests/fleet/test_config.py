"""The hub's storage settings compose through Hydra and wrong values name their key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from configs import CONFIG_DIR
from fleet.config import HubConfig, register_configs

register_configs()


def _hub(*overrides: str) -> HubConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="hub", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


def test_storage_settings_compose_with_their_defaults_and_overrides():
    cfg = _hub("store_group_chunks=8", "storage_dir=/data/hub")
    cfg.validate()
    assert cfg.store_group_chunks == 8 and cfg.store_group_wait_ms == 1.0
    assert cfg.parquet_path() == Path("/data/hub/parquet")
    assert _hub("parquet_dir=/lake").parquet_path() == Path("/lake")


@pytest.mark.parametrize("override,key", [("store_group_chunks=0", "store_group_chunks"),
                                          ("store_group_wait_ms=-1", "store_group_wait_ms"),
                                          ("parquet_file_mb=0", "parquet_file_mb"),
                                          ("parquet_roll_s=-5", "parquet_roll_s"),
                                          ("credit_bytes=0", "credit_bytes"), ("heartbeat_ms=5", "heartbeat_ms"),
                                          ("dead_after_heartbeats=0", "dead_after_heartbeats"),
                                          ("registry_every_s=0", "registry_every_s")])
def test_wrong_storage_value_is_refused_naming_its_key(override, key):
    with pytest.raises(ValueError, match=f"^{key}: invalid value"):
        _hub(override).validate()
