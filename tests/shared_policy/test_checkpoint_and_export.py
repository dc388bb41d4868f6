import json

import numpy as np
import pytest
import torch

from shared_policy.adapter import Adapter
from shared_policy.checkpoint import CheckpointError, load_adapter_state, load_checkpoint, save_checkpoint
from shared_policy.export import export_onnx
from tests.shared_policy.conftest import SPECS


def _perturb(policy):
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        policy.stems["arm2"].normalizer.update(torch.randn(100, 12) * 3 + 1)


def test_round_trip_restores_weights_normalisers_and_adapters(tmp_path, policy):
    _perturb(policy)
    adapter = Adapter(policy, "arm2")
    with torch.no_grad():
        adapter.head_delta.up.add_(1.0)
    save_checkpoint(tmp_path / "ck", policy, trunk_version=7, config={"seed": 3}, adapters={"unit-1": adapter})
    loaded, manifest = load_checkpoint(tmp_path / "ck", expected=SPECS)
    assert manifest["trunk_version"] == 7 and manifest["config"] == {"seed": 3}
    for k, v in policy.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    restored = Adapter(loaded, "arm2")
    restored.load_state_dict(load_adapter_state(tmp_path / "ck", "unit-1"))
    obs = torch.randn(4, 12)
    assert torch.equal(policy.action_mean("arm2", obs, adapter), loaded.action_mean("arm2", obs, restored))


def test_a_flipped_byte_is_refused_naming_the_file(tmp_path, policy):
    save_checkpoint(tmp_path / "ck", policy, trunk_version=1)
    f = tmp_path / "ck" / "trunk.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="trunk.safetensors is corrupted"):
        load_checkpoint(tmp_path / "ck")


def test_missing_file_and_broken_manifest_are_refused(tmp_path, policy):
    save_checkpoint(tmp_path / "ck", policy, trunk_version=1)
    (tmp_path / "ck" / "hardware" / "arm7.safetensors").unlink()
    with pytest.raises(CheckpointError, match="arm7.safetensors is missing"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "nothing-here")


def test_layout_mismatch_is_refused(tmp_path, policy):
    save_checkpoint(tmp_path / "ck", policy, trunk_version=1)
    from shared_policy.policy import HardwareSpec

    other = {"arm2": HardwareSpec("arm2", 12, 2, 24, obs_layout=(("joint_pos_rel", 2), ("joint_vel", 2),
                                                                  ("ee_pos", 3), ("target_pos", 3),
                                                                  ("last_action", 2)))}
    with pytest.raises(CheckpointError, match="layout mismatch for 'arm2'.obs_layout"):
        load_checkpoint(tmp_path / "ck", expected=other)
    with pytest.raises(CheckpointError, match="no hardware type 'go2_like'"):
        load_checkpoint(tmp_path / "ck", expected={"go2_like": HardwareSpec("go2_like", 45, 12, 65)})


def test_overwrite_is_atomic_and_keeps_one_valid_checkpoint(tmp_path, policy):
    save_checkpoint(tmp_path / "ck", policy, trunk_version=1)
    save_checkpoint(tmp_path / "ck", policy, trunk_version=2)
    assert json.loads((tmp_path / "ck" / "manifest.json").read_text())["trunk_version"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]


@pytest.mark.parametrize("hardware", ["arm2", "arm7"])
def test_onnx_export_agrees_with_torch(tmp_path, policy, hardware):
    import onnxruntime as ort

    _perturb(policy)
    path = export_onnx(policy, hardware, tmp_path / f"{hardware}.onnx")
    session = ort.InferenceSession(str(path))
    obs = torch.randn(33, policy.spec(hardware).num_obs) * 4
    onnx_out = session.run(None, {"obs": obs.numpy()})[0]
    torch_out = policy.action_mean(hardware, obs).detach().numpy()
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-5)


def _with_profile(spec, profile: dict, digest: str):
    import dataclasses

    return dataclasses.replace(spec, profile_hash=digest, profile=json.dumps(profile, sort_keys=True))


ARM2_PROFILE = {"name": "arm2", "actuator": {"mode": "pd", "action_scale": 0.5},
                "joints": [{"name": "shoulder", "kp": 40.0, "kd": 2.0}, {"name": "elbow", "kp": 25.0, "kd": 1.0}]}


def test_checkpoint_of_another_hardware_profile_is_refused_naming_the_fields(tmp_path):
    from shared_policy.config import PolicyConfig
    from shared_policy.policy import FleetPolicy

    trained = {**SPECS, "arm2": _with_profile(SPECS["arm2"], ARM2_PROFILE, "a" * 64)}
    policy = FleetPolicy(PolicyConfig(latent_dim=32, trunk_hidden=[32], stem_hidden=[32], critic_hidden=[32]), trained)
    save_checkpoint(tmp_path / "ck", policy, trunk_version=1)
    _, manifest = load_checkpoint(tmp_path / "ck", expected={"arm2": trained["arm2"]})
    assert manifest["hardware"]["arm2"]["profile_hash"] == "a" * 64
    assert manifest["hardware"]["arm2"]["profile"] == ARM2_PROFILE
    robot = json.loads(json.dumps(ARM2_PROFILE))
    robot["joints"][1]["kp"] = 30.0
    robot["actuator"]["action_scale"] = 0.25
    with pytest.raises(CheckpointError, match=r"profile mismatch for 'arm2'.*actuator.action_scale: checkpoint 0.5, "
                                              r"expected 0.25; joints\[elbow\].kp: checkpoint 25.0, expected 30.0"):
        load_checkpoint(tmp_path / "ck", expected={"arm2": _with_profile(SPECS["arm2"], robot, "b" * 64)})


def test_checkpoint_from_before_profile_hashes_loads_by_layout_with_a_warning(tmp_path, policy, caplog):
    save_checkpoint(tmp_path / "ck", policy, trunk_version=1)  # SPECS carry no profile: an old manifest
    assert "profile_hash" not in json.loads((tmp_path / "ck" / "manifest.json").read_text())["hardware"]["arm2"]
    with caplog.at_level("WARNING", logger="shared_policy.checkpoint"):
        load_checkpoint(tmp_path / "ck", expected={"arm2": _with_profile(SPECS["arm2"], ARM2_PROFILE, "a" * 64)})
    assert any("no hardware profile for 'arm2'" in r.getMessage() for r in caplog.records)
