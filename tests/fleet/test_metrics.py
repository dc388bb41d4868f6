"""The hub's metrics where operators read them: a Prometheus endpoint scraped over HTTP from a real fleet-hub
process, an offline W&B run's files, and both bounded when robots come and go."""

from __future__ import annotations

import re
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from prometheus_client.parser import text_string_to_metric_families

from configs import CONFIG_DIR
from fleet.config import HubConfig, register_configs
from fleet.hub import HubServer
from fleet.metrics import HUB_WIDE, HubMetrics
from fleet.metrics_config import MetricsConfig
from fleet.protocol import Chunk
from fleet.registry import load_registry
from tests.fleet.hub_client import (
    BareRobot,
    ThreadHub,
    free_port,
    hub_config,
    kill_group,
    start_hub_process,
    wait_until,
)
from tests.fleet.test_hub import cid, record

register_configs()


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as res:
        text = res.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def robot_labels(samples: dict[tuple[str, tuple], float]) -> set[str]:
    return {dict(labels)["robot"] for _, labels in samples if "robot" in dict(labels)}


def _send_acked(robot: BareRobot, seqs: range) -> None:
    for s in seqs:
        assert robot.send(robot.chunk(cid(robot.robot_id, s), record(robot.robot_id, s)))
    acked: set[str] = set()
    while len(acked) < len(seqs):
        ack = robot.recv_type("ack", skip=("heartbeat", "credit"))
        assert ack is not None, f"{len(acked)} of {len(seqs)} acked"
        acked |= set(ack.stored)


@pytest.mark.timeout(120)
def test_a_hub_process_serves_prometheus_metrics_that_count_what_a_robot_sent(tmp_path, robots):
    port, metrics_port = free_port(), free_port()
    proc = start_hub_process(tmp_path, port, f"metrics.prometheus_port={metrics_port}", "registry_every_s=0.1")
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        before = scrape(url)
        assert before[("fleet_hub_chunks_stored_total", ())] == 0
        assert before[("fleet_hub_robots_connected", ())] == 0
        robot = robots(f"tcp://127.0.0.1:{port}", "unit-0")
        robot.welcome()
        _send_acked(robot, range(1, 13))
        bad = bytearray(record("unit-0", 13))
        bad[-1] ^= 0xFF  # a flipped digest byte: refused at decode, BAD_DIGEST
        assert robot.send(Chunk.of("unit-0", 99, cid("unit-0", 13), bytes(bad)))
        assert robot.recv_type("nack", skip=("heartbeat", "credit")) is not None
        after = wait_until(lambda: (s := scrape(url))[("fleet_hub_chunks_stored_total", ())] == 12 and
                           s.get(("fleet_hub_nacks_by_reason_total", (("reason", "BAD_DIGEST"),))) == 1 and s, 30)
        assert after, scrape(url)
        unit = (("robot", "unit-0"),)
        assert after[("fleet_hub_robot_chunks_stored_total", unit)] == 12
        assert after[("fleet_hub_robot_bytes_stored_total", unit)] == sum(len(record("unit-0", s)) for s in range(1, 13))
        assert after[("fleet_hub_robots_connected", ())] == 1 and after[("fleet_hub_robot_connected", unit)] == 1
        assert after[("fleet_hub_chunks_acked_total", ())] == 12 and after[("fleet_hub_nacks_total", ())] == 1
        assert after[("fleet_hub_store_commit_seconds_count", ())] >= 1
        assert after[("fleet_hub_robot_info", (("hardware", "cartpole"), ("robot", "unit-0"), ("state", "alive")))] == 1
        for key in HUB_WIDE:  # every hub-wide number is served, counters as <name>_total
            kind = HUB_WIDE[key][0]
            assert (f"fleet_hub_{key}{'_total' if kind == 'counter' else ''}", ()) in after, key
        assert _listening_on(metrics_port) == {"0100007F"}  # bound to 127.0.0.1 only
        assert load_registry(tmp_path / "hub" / "registry.json")["hub"]["prometheus"] == url
    finally:
        kill_group(proc)


def _listening_on(port: int) -> set[str]:
    """Local addresses (kernel hex) of the TCP sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if Path(table).exists():
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(addr)
    return found


@pytest.mark.timeout(60)
def test_a_prometheus_port_in_use_refuses_the_start_naming_its_key(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = hub_config(tmp_path / "hub", metrics=MetricsConfig(prometheus_port=taken.getsockname()[1], wandb=False))
        with pytest.raises(ValueError, match="metrics.prometheus_port"):
            HubServer(cfg)
    hub = ThreadHub(cfg)  # nothing was left open: the same store and port serve the next start
    hub.stop()


@pytest.mark.timeout(120)
def test_robots_gone_for_forget_after_s_leave_the_registry_and_the_metrics_but_not_the_totals(tmp_path, robots):
    metrics_port = free_port()
    hub = ThreadHub(hub_config(tmp_path / "hub", heartbeat_ms=100, dead_after_heartbeats=3, registry_every_s=0.05,
                               forget_after_s=1.5, metrics=MetricsConfig(prometheus_port=metrics_port, wandb=False)))
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        for wave in range(3):  # churn: 3 waves of 5 robots, each sends, then goes silent for good
            batch = [robots(hub.endpoint, f"unit-{wave}-{k}") for k in range(5)]
            for r in batch:
                r.welcome()
                _send_acked(r, range(1, 3))
                assert r.send(r.heartbeat(spool_depth=4))
            ids, last = {r.robot_id for r in batch}, batch[-1].robot_id
            live = wait_until(lambda ids=ids: robot_labels(scrape(url)) >= ids, 10)
            assert live, robot_labels(scrape(url))
            row = wait_until(lambda last=last: (r := load_registry(tmp_path / "hub" / "registry.json")["robots"].get(
                last)) and r["heartbeat_age_s"] is not None and r, 10)
            assert row and row["spool_depth"] == 4, row
            for r in batch:
                r.close()
            robots_left = wait_until(lambda: not load_registry(tmp_path / "hub" / "registry.json")["robots"], 30)
            assert robots_left, load_registry(tmp_path / "hub" / "registry.json")["robots"].keys()
        samples = wait_until(lambda: (s := scrape(url))[("fleet_hub_robots_forgotten_total", ())] == 15 and s, 10)
        assert samples, scrape(url)
        assert robot_labels(samples) == set()  # no series left behind by the 15 robots
        assert samples[("fleet_hub_robots_known", ())] == 0
        assert samples[("fleet_hub_chunks_stored_total", ())] == 30  # their chunks still count fleet-wide
        assert not hub.server.sessions and not hub.server.registry.robots
    finally:
        hub.stop()


def test_per_robot_series_are_capped_and_the_cap_says_how_many_it_left_out():
    metrics = HubMetrics(MetricsConfig(max_robot_series=2, wandb=False))
    metrics.publish({"hub": {}, "forgotten": {}, "robots": {
        f"unit-{k}": {"robot_id": f"unit-{k}", "state": "alive", "hardware": "cartpole", "last_seen": 100.0 + k,
                      "chunks_in": k} for k in range(5)}})
    families = {f.name: f for f in metrics.collect()}
    chunks = families["fleet_hub_robot_chunks_stored"].samples
    assert {s.labels["robot"] for s in chunks} == {"unit-4", "unit-3"}  # the most recently heard
    assert families["fleet_hub_robot_series_dropped"].samples[0].value == 3
    assert families["fleet_hub_chunks_stored"].samples[0].value == sum(range(5))  # all counted hub-wide


def _wandb_history(run_file: Path) -> dict[str, str]:
    """The last logged value of each ``hub/...`` key in an offline run's .wandb file (its history items are
    protobuf strings: key, then the value as JSON)."""
    found = {}
    for m in re.finditer(rb"\x12(.)(hub/[a-z_]+)\x82\x01(.)", run_file.read_bytes(), re.S):
        if m.group(1)[0] == len(m.group(2)):
            start = m.end()
            found[m.group(2).decode()] = run_file.read_bytes()[start:start + m.group(3)[0]].decode()
    return found


@pytest.mark.timeout(180)
def test_a_hub_process_logs_its_hub_wide_metrics_to_an_offline_wandb_run(tmp_path, robots):
    port = free_port()
    proc = start_hub_process(tmp_path, port, "metrics.wandb_every_s=0.5", "registry_every_s=0.1",
                             env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    try:
        robot = robots(f"tcp://127.0.0.1:{port}", "unit-0")
        robot.welcome()
        _send_acked(robot, range(1, 8))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(90) == 0, "".join(proc.output)
    finally:
        kill_group(proc)
    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list(tmp_path.rglob("*"))
    history = _wandb_history(runs[0])
    assert {f"hub/{k}" for k in HUB_WIDE} | {"hub/store_commit_ms_mean"} <= set(history)
    assert float(history["hub/chunks_stored"]) == 7  # the final log, after the last ack


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("mode", "override"), [("disabled", "metrics.wandb=true"), ("offline", "metrics.wandb=false")])
def test_no_wandb_run_when_wandb_mode_is_disabled_or_the_switch_is_off(tmp_path, mode, override):
    port = free_port()
    proc = start_hub_process(tmp_path, port, "metrics.wandb_every_s=0.2", override, "run_for_s=1.5",
                             env={"WANDB_MODE": mode, "WANDB_DIR": str(tmp_path)})
    try:
        assert proc.wait(60) == 0
    finally:
        kill_group(proc)
    assert not (tmp_path / "wandb").exists()


def _hub(*overrides: str) -> HubConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="hub", overrides=list(overrides))
    return OmegaConf.to_object(cfg)


def test_metrics_and_export_settings_compose_with_their_defaults():
    cfg = _hub("metrics.prometheus_port=9464", "parquet_every_s=2.5")
    cfg.validate()
    assert cfg.metrics.prometheus_port == 9464 and cfg.metrics.prometheus_addr == "127.0.0.1"
    assert cfg.parquet_export and cfg.parquet_every_s == 2.5
    default = _hub()
    assert default.metrics.prometheus_port == 0 and default.metrics.wandb and default.forget_after_s == 3600


@pytest.mark.parametrize(("override", "key"), [
    ("metrics.prometheus_port=70000", "metrics.prometheus_port"), ("metrics.wandb_every_s=0", "metrics.wandb_every_s"),
    ("metrics.max_robot_series=-1", "metrics.max_robot_series"), ("parquet_every_s=0", "parquet_every_s"),
    ("parquet_busy_max=0", "parquet_busy_max"), ("parquet_busy_max=1.5", "parquet_busy_max"),
    ("forget_after_s=0", "forget_after_s")])
def test_wrong_metrics_or_export_value_is_refused_naming_its_key(override, key):
    with pytest.raises(ValueError, match=f"^{key}: "):
        _hub(override).validate()


@pytest.mark.timeout(60)
def test_a_robot_whose_connection_closed_reads_gone_not_connected_until_its_next_hello(tmp_path, robots):
    hub = ThreadHub(hub_config(tmp_path / "hub", heartbeat_ms=50, dead_after_heartbeats=1000, registry_every_s=0.05,
                               metrics=MetricsConfig(wandb=False)))
    registry = tmp_path / "hub" / "registry.json"

    def state() -> str | None:
        row = load_registry(registry)["robots"].get("unit-0") if registry.exists() else None
        return row and row["state"]

    try:
        first = robots(hub.endpoint, "unit-0")
        first.welcome()
        assert wait_until(lambda: state() == "alive", 10)
        first.close()  # no missed-heartbeat verdict yet (1000 intervals): the hub's next heartbeat finds no peer
        assert wait_until(lambda: state() == "gone", 20), state()
        assert hub.server.metrics.snapshot["robots"]["unit-0"]["state"] == "gone"
        robots(hub.endpoint, "unit-0").welcome()
        assert wait_until(lambda: state() == "alive", 10), state()
    finally:
        hub.stop()
