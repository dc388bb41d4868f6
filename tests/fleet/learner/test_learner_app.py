"""fleet-learn on a real hub storage dir: experience recorded as robots record it, stored through the hub's write
path, adapters in the adapter table, the current trunk in the trunk store; real Hydra composition."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from configs import CONFIG_DIR
from fleet.learner_app import EXIT_OK, EXIT_REFUSED, run_learn
from fleet.learner_inputs import FreshChunks, experience_reader
from fleet.parquet_export import ParquetExporter
from fleet.replay.feed import ReplayFeeder
from fleet.replay.replay import FleetReplay
from fleet.rollout_log import read_steps
from fleet.store import STORE_FILE, ExperienceStore
from fleet.trunk_store import TrunkStore
from hardware.randomization import PhysicsParams
from shared_policy.adapter import load_adapter
from shared_policy.checkpoint import load_checkpoint
from tests.fleet.learner.experience import FAST, HW, make_hub, publish_trunk, robot_records, store_records
from tests.fleet.trunks import small_checkpoint

ROOT = Path(__file__).resolve().parents[3]


def learn_config(storage: Path, out: Path, *overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        dcfg = compose("learn", overrides=[f"storage_dir={storage}", f"output_dir={out}", *FAST, *overrides])
    return OmegaConf.to_object(dcfg)


def flat(policy) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in policy.trunk.parameters()])


@pytest.mark.timeout(180)
def test_rounds_that_pass_the_gate_publish_each_candidate_with_its_rebased_adapters(tmp_path, trunk):
    storage = make_hub(tmp_path, trunk)
    # a gentle step: the candidates move, but not far enough for 8 gate episodes to call them worse
    cfg = learn_config(storage, tmp_path / "out", "rounds=2", "publish_candidate=false", "learner.learning_rate=1e-5",
                       "sim.ppo.learning_rate=1e-5", "sim.ppo.schedule=fixed", "gate.tolerance=0.9")
    assert run_learn(cfg) == EXIT_OK
    assert TrunkStore(storage).versions() == [1, 2, 3] and TrunkStore(storage).current().version == 3
    logged = [(s["event"], s["by"], s["version"], s["rebased_adapters"]) for s in read_steps(storage)]
    assert logged == [("published", "learner", v, ["unit-a", "unit-b"]) for v in (2, 3)]  # the roll-out log says so
    curve = (tmp_path / "out" / "curve.csv").read_text().splitlines()  # the learner's curve: a row per update slot
    assert curve[0].startswith("update,round,sim,steps_used,") and "cartpole/policy_loss" in curve[0]
    assert [row.split(",")[0] for row in curve[1:]] == [str(i) for i in range(1, 17)]  # 2 rounds x 8 updates
    rows = list(csv.DictReader(curve))
    assert [r["round"] for r in rows] == ["1"] * 8 + ["2"] * 8  # the report draws a line where a round starts
    for r in rows:  # each row holds its own slot's metrics: a sim slot no V-trace loss, and the other way round
        sim_slot = r["sim"] == "1"
        assert (r["cartpole/policy_loss"] == "") == sim_slot and (r["sim/loss/policy"] == "") != sim_slot, r
    assert {r["sim"] for r in rows} == {"0", "1"}
    # the rebased adapters travel with their trunk, each packed for its robot (and none for the robot without)
    robots = sorted(p.name for p in (storage / "trunks" / "v000002.robots").glob("*.tar"))
    assert robots == ["unit-a.tar", "unit-b.tar"]
    first, manifest = load_checkpoint(tmp_path / "out" / "round_1" / "candidate")
    assert manifest["trunk_version"] == 2
    assert not torch.equal(flat(first), flat(trunk[0]))  # the fleet's experience moved the trunk
    second, manifest = load_checkpoint(tmp_path / "out" / "round_2" / "candidate")
    assert manifest["trunk_version"] == 3 and not torch.equal(flat(second), flat(first))
    for n, policy in ((1, first), (2, second)):  # each robot with an adapter gets one rebased on each new trunk
        for robot in ("unit-a", "unit-b"):
            _, meta = load_adapter(tmp_path / "out" / f"round_{n}" / "adapters" / f"{robot}.safetensors", policy, HW)
            assert (meta["trunk_version"], meta["version"]) == (str(n + 1), str(n + 3))
        assert not (tmp_path / "out" / f"round_{n}" / "adapters" / "unit-c.safetensors").exists()  # it ran none


@pytest.mark.timeout(180)
def test_a_candidate_the_gate_refuses_publishes_nothing_and_exits_3(tmp_path, trunk):
    # experience whose recorded reward is the action: V-trace learns to push one way, which the sim gate sees
    # (IMPALA's unclipped gradient, not the default APPO clip, so 30 updates push far enough to be worse)
    storage = make_hub(tmp_path, trunk, reward="push")
    before = TrunkStore(storage).versions()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    res = subprocess.run([sys.executable, "-m", "fleet.learner_app", f"storage_dir={storage}",
                          f"output_dir={tmp_path}/out", *FAST, "updates=30", "sim_fraction=0", "gate.episodes=16",
                          "learner.learning_rate=0.003", "learner.vtrace.policy_loss=vtrace"],
                         capture_output=True, text=True, timeout=170, env=env, cwd=tmp_path)
    assert res.returncode == EXIT_REFUSED, res.stdout + res.stderr
    assert "gate refused candidate v2; nothing published" in res.stdout
    low, high = map(float, re.search(r"gate cartpole: .* difference \[(\S+), (\S+)\]", res.stdout).groups())
    assert high < 0  # refused for being worse, not for noise
    candidate, _ = load_checkpoint(tmp_path / "out" / "round_1" / "candidate")
    obs = torch.cat([torch.as_tensor(c.arrays["obs"]) for c in experience_reader(learn_config(storage, tmp_path)).read()])
    with torch.no_grad():
        push = candidate.action_mean(HW, obs).mean() - trunk[0].action_mean(HW, obs).mean()
    assert push > 0.5  # what the fleet's reward taught it
    assert TrunkStore(storage).versions() == before and TrunkStore(storage).current().version == 1
    assert not (tmp_path / "out" / "round_1" / "adapters").exists()


@pytest.mark.timeout(120)
def test_fleet_batches_reach_the_critic_with_the_physics_columns_as_recorded(tmp_path, trunk, monkeypatch):
    storage = make_hub(tmp_path, trunk, steps=48)
    seen: list[torch.Tensor] = []
    from fleet import learner_round

    class Recording(learner_round.VTraceLearner):
        def update(self, batch, adapters):
            handle = self.policy.critic_stems[HW].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
            try:
                return super().update(batch, adapters)
            finally:
                handle.remove()

    monkeypatch.setattr("fleet.learner_app.VTraceLearner", Recording)
    assert run_learn(learn_config(storage, tmp_path / "out", "updates=3", "sim_fraction=0", "publish=false",
                                  "gate.tolerance=0.99", "learner.learning_rate=1e-6")) in (EXIT_OK, EXIT_REFUSED)
    assert seen
    rows = torch.cat(seen)
    physics = rows[:, -PhysicsParams.NUM_PRIVILEGED:]
    assert torch.equal(physics, torch.zeros_like(physics))  # nominal 0, as the robot recorded: nothing filled in
    recorded = {tuple(r) for c in experience_reader(learn_config(storage, tmp_path)).read()
                for r in np.round(c.arrays["critic_obs"], 6).tolist()}
    real = rows[rows.abs().sum(1) > 0]  # padding rows past an item's end are zeros
    assert len(real) and all(tuple(r) in recorded for r in np.round(real.numpy(), 6).tolist())


@pytest.mark.timeout(120)
def test_chunks_acted_by_a_trunk_past_the_staleness_limit_never_enter_the_replay(tmp_path, trunk):
    policy, _ = trunk
    storage = tmp_path / "hub"
    fresh = robot_records(policy, ["unit-new"], {}, 64, 32, trunk_version=5, seed=1)
    stale = robot_records(policy, ["unit-old"], {}, 64, 32, trunk_version=1, seed=2)
    store_records(storage, fresh + stale)
    cfg = learn_config(storage, tmp_path)
    reader = FreshChunks(experience_reader(cfg), trunk_version=6, max_staleness=4)  # v1 is 5 versions behind
    replay = FleetReplay(cfg.replay)
    feeder = ReplayFeeder(reader, replay)
    while feeder.step():
        pass
    robots = {s.robot_id for s in replay.table(HW).items()}
    assert robots == {"unit-new"}
    assert reader.stale_chunks == 2 and reader.stale_steps == 64
    # within the limit nothing is dropped
    again = FreshChunks(experience_reader(cfg), trunk_version=5, max_staleness=4)
    assert sum(len(c.arrays["rewards"]) for c in again.read()) == 128 and again.stale_steps == 0


@pytest.mark.timeout(120)
def test_a_round_reads_the_parquet_tier_as_a_learner_on_another_machine_does(tmp_path, trunk, capsys):
    storage = make_hub(tmp_path, trunk, steps=64)
    store = ExperienceStore(storage / STORE_FILE)
    try:  # the tier as copied to the learner's machine
        ParquetExporter(store, tmp_path / "copied" / "parquet", fsync=False).catch_up()
    finally:
        store.close()
    from_store = FleetReplay(learn_config(storage, tmp_path).replay)
    feeder = ReplayFeeder(experience_reader(learn_config(storage, tmp_path)), from_store)
    while feeder.step():
        pass
    cfg = learn_config(storage, tmp_path / "out", "replay.source=parquet",
                       f"replay.parquet_dir={tmp_path}/copied/parquet", "sim_fraction=0", "publish=false",
                       "learner.learning_rate=1e-5", "gate.tolerance=0.9")
    assert run_learn(cfg) == EXIT_OK
    out = capsys.readouterr().out
    assert f"rank 0: {len(from_store.table(HW))} sequences in the replay" in out  # all of it, as from the store
    assert "rebased unit-a" in out and "rebased unit-b" in out  # their observations came from the tier too
    assert "not published" in out and TrunkStore(storage).versions() == [1]


def test_bad_learn_settings_name_their_key(tmp_path):
    storage = tmp_path / "hub"
    for override, key in (("sim_fraction=1.5", "sim_fraction"), ("replay.source=ftp", "replay.source"),
                          ("updates=0", "updates"), ("learner.learning_rate=0", "learner.learning_rate")):
        with pytest.raises(ValueError, match=re.escape(key)):
            learn_config(storage, tmp_path, override).validate()
    with pytest.raises(ValueError, match="storage_dir"):  # no trunk store
        run_learn(learn_config(storage, tmp_path, "sim_fraction=0"))
    storage.mkdir()
    publish_trunk(storage, small_checkpoint(tmp_path / "ck", trunk_version=1, trunk_hidden=(8,)))
    with pytest.raises(ValueError, match=re.escape("gate.tasks.cartpole")):  # the trunk's type has no task
        run_learn(learn_config(storage, tmp_path, "sim_fraction=0", "~gate.tasks.cartpole"))
    with pytest.raises(ValueError, match="storage_dir: no experience store"):
        run_learn(learn_config(storage, tmp_path, "sim_fraction=0"))


@pytest.mark.timeout(180)
def test_after_a_rolled_back_candidate_the_next_is_numbered_past_it_and_goes_to_the_canaries(tmp_path, trunk):
    storage = make_hub(tmp_path, trunk)
    store = TrunkStore(storage)
    rejected = store.publish(small_checkpoint(tmp_path / "rejected", trunk_version=1), candidate=True)
    store.end_trial(rejected.version, False)  # its canaries rolled it back: v2 is used, v1 is current
    assert store.current().version == 1 and store.versions() == [1, 2]
    cfg = learn_config(storage, tmp_path / "out", "learner.learning_rate=1e-5", "sim.ppo.learning_rate=1e-5",
                       "sim.ppo.schedule=fixed", "gate.tolerance=0.9")
    assert run_learn(cfg) == EXIT_OK
    assert store.versions() == [1, 2, 3] and store.current().version == 1  # a candidate, not current
    assert store.candidate().version == 3


@pytest.mark.timeout(180)
def test_an_adapter_trained_on_another_trunk_is_not_applied(tmp_path, trunk):
    from fleet.learner_inputs import fleet_adapters

    storage = make_hub(tmp_path, trunk)  # its adapters were trained on v1, the current trunk
    policy = trunk[0]
    on_v1, _ = fleet_adapters(storage, policy, 1)
    on_v2, _ = fleet_adapters(storage, policy, 2)
    assert sorted(on_v1) == ["unit-a", "unit-b"] and on_v2 == {}


@pytest.mark.timeout(180)
def test_a_stored_adapter_that_does_not_load_costs_only_its_robot(tmp_path, trunk, capsys):
    from fleet.learner_inputs import fleet_adapters
    from shared_policy.adapter import Adapter
    from tests.fleet.learner.experience import upload_adapter

    storage = make_hub(tmp_path, trunk)
    policy = trunk[0]
    other, _ = load_checkpoint(small_checkpoint(tmp_path / "other", trunk_version=1, trunk_hidden=(8,)))
    upload_adapter(storage, "unit-a", Adapter(other, HW), version=9, trunk_version=1)  # another layout: no fit
    adapters, stored = fleet_adapters(storage, policy, 1)
    assert sorted(adapters) == sorted(stored) == ["unit-b"]
    assert "adapter v9 of unit-a not usable" in capsys.readouterr().out


@pytest.mark.timeout(240)
def test_a_robot_held_back_on_an_older_trunk_gets_an_adapter_rebased_from_the_trunk_it_runs(tmp_path, trunk, capsys):
    import copy

    from fleet.learner_inputs import robot_observations
    from fleet.unit_watch import holds_path
    from shared_policy.actor import MergedActor
    from shared_policy.checkpoint import save_checkpoint
    from tests.fleet.learner.experience import unit_adapter, upload_adapter

    storage = make_hub(tmp_path, trunk)  # v1 current; unit-a and unit-b adapters trained on v1
    v1 = trunk[0]
    v2 = copy.deepcopy(v1)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():  # a trunk that acts clearly otherwise than v1
        for p in v2.trunk.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    assert TrunkStore(storage).publish(save_checkpoint(tmp_path / "v2", v2, trunk_version=2)).version == 2
    held = load_adapter_of(storage, "unit-b", v1)  # what unit-b learned on v1
    upload_adapter(storage, "unit-a", unit_adapter(v2, 5), version=4, trunk_version=2)  # unit-a moved on to v2
    upload_adapter(storage, "unit-b", unit_adapter(v2, 6), version=4, trunk_version=2)  # unit-b tried v2 too, then
    holds_path(storage).write_text(json.dumps({"seen": [], "holds": {"unit-b": 1}, "watch": None}))  # was held back
    cfg = learn_config(storage, tmp_path / "out", "rebase.target=merged", "rebase.steps=300",
                       "learner.learning_rate=1e-5", "sim.ppo.learning_rate=1e-5", "sim.ppo.schedule=fixed",
                       "gate.tolerance=0.9", "publish_candidate=false")
    assert run_learn(cfg) == EXIT_OK
    out = capsys.readouterr().out
    assert "1 held back on older trunks (unit-b: rebased from theirs)" in out
    assert "rebased unit-a (cartpole, from trunk v2)" in out and "rebased unit-b (cartpole, from trunk v1)" in out
    candidate, _ = load_checkpoint(tmp_path / "out" / "round_1" / "candidate")
    rebased, meta = load_adapter(tmp_path / "out" / "round_1" / "adapters" / "unit-b.safetensors", candidate, HW)
    assert (meta["trunk_version"], meta["version"]) == ("3", "5")  # numbered past its v2 upload (4)
    obs = robot_observations(experience_reader(cfg), {"unit-b"}, 512)["unit-b"]
    acts = MergedActor(candidate, HW, rebased)(obs)
    ran = MergedActor(v1, HW, held)(obs)  # what unit-b really ran
    as_if_current = MergedActor(v2, HW, held)(obs)  # its adapter on a trunk it never ran
    gap, wrong = (acts - ran).abs().mean().item(), (acts - as_if_current).abs().mean().item()
    assert gap < 0.5 * wrong, (gap, wrong)


@pytest.mark.timeout(180)
def test_a_robot_runs_its_newest_adapter_for_the_trunk_it_runs_not_its_newest_upload(tmp_path, trunk):
    from fleet.learner_inputs import robot_adapters
    from fleet.unit_watch import holds_path
    from tests.fleet.learner.experience import unit_adapter, upload_adapter

    storage = make_hub(tmp_path, trunk)  # v1 current; unit-a and unit-b adapters (version 3) trained on v1
    policy = trunk[0]
    upload_adapter(storage, "unit-a", unit_adapter(policy, 8), version=4, trunk_version=2)  # a canary of a v2
    # candidate that was rolled back: its newest upload is for a trunk no robot runs; it runs v1 and its v1 adapter
    found = robot_adapters(storage, policy, 1)
    assert sorted(found.adapters) == ["unit-a", "unit-b"] and found.stored["unit-a"].adapter_version == 3
    assert found.newest == {"unit-a": 4, "unit-b": 3} and found.held == {}
    holds_path(storage).write_text(json.dumps({"seen": [], "holds": {"unit-b": 7}, "watch": None}))
    found = robot_adapters(storage, policy, 1)  # unit-b held on a version it has no adapter for: learned bare
    assert sorted(found.adapters) == ["unit-a"] and "unit-b" not in found.stored
    holds_path(storage).write_text('{"holds": {"unit-b": "one"}}')
    with pytest.raises(ValueError, match="unit_holds.json is damaged"):
        robot_adapters(storage, policy, 1)


@pytest.mark.timeout(180)
def test_a_robot_with_no_upload_on_the_current_trunk_runs_the_adapter_packed_with_it(tmp_path, trunk, capsys):
    from fleet.learner_inputs import decode_running, encode_running, robot_adapters, running_adapters
    from shared_policy.adapter import save_adapter
    from shared_policy.checkpoint import save_checkpoint
    from tests.fleet.learner.experience import unit_adapter

    storage = make_hub(tmp_path, trunk)  # v1 current; unit-a and unit-b adapters (version 3) trained on v1
    policy = trunk[0]
    sent = unit_adapter(policy, 11)
    save_adapter(tmp_path / "rebased" / "unit-a.safetensors", sent, 9, 2)
    v2 = TrunkStore(storage).publish(save_checkpoint(tmp_path / "v2", policy, trunk_version=2),
                                     adapters=tmp_path / "rebased")
    assert v2.version == 2  # current, with unit-a's rebased adapter packed; neither robot has uploaded on v2 yet
    found = robot_adapters(storage, policy, 2)
    assert sorted(found.adapters) == ["unit-a"]  # unit-b runs a fresh adapter on v2: learned bare
    assert (found.stored["unit-a"].adapter_version, found.stored["unit-a"].trunk_version) == (9, 2)
    assert found.newest["unit-a"] == 9  # its next rebased adapter is numbered past the packed one
    packed, sent = found.adapters["unit-a"].state_dict(), sent.state_dict()
    assert packed.keys() == sent.keys() and all(torch.equal(packed[k], sent[k]) for k in sent)  # the very adapter
    # what rank 0 of a torchrun learner sends the other ranks is what it read
    assert decode_running(encode_running(*running_adapters(storage, policy, 2))) == running_adapters(storage,
                                                                                                  policy, 2)
    archive = Path(TrunkStore(storage).robot_archive(2, "unit-a").path)
    data = bytearray(archive.read_bytes())
    data[-2000] ^= 1  # one bit of the archive flipped on disk (in its tail: the record's sha256 catches any)
    archive.write_bytes(bytes(data))
    assert robot_adapters(storage, policy, 2).adapters == {}  # learned bare, not with a damaged adapter
    said = capsys.readouterr().out
    assert "not usable: learned bare" in said and "does not match the sha256 its record names" in said


def load_adapter_of(storage: Path, robot: str, policy):
    """The newest adapter ``robot`` uploaded, loaded for ``policy``."""
    from fleet.learner_inputs import fleet_adapters

    adapters, _ = fleet_adapters(storage, policy, 1)
    return adapters[robot]
