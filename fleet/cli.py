"""fleet-hub: the hub daemon's Hydra app, plus the operator's status command.

    fleet-hub storage_dir=/data/hub security.keys_dir=/etc/fleet/keys bind=tcp://0.0.0.0:5555
    fleet-hub status [STORAGE_DIR]     the fleet registry as a table (default storage dir: fleet_data)
    fleet-hub publish CHECKPOINT [STORAGE_DIR] [--canary] [--adapters DIR]
                                       store a checkpoint as the next trunk version and make it current (--canary:
                                       the candidate, tried on canaries first; --adapters: rebased adapters,
                                       <robot_id>.safetensors, each sent to its robot with the trunk)
    fleet-hub rollback N [STORAGE_DIR]  make stored version N current for every robot, ending any trial

SIGTERM / SIGINT: refuse new chunks (SHUTTING_DOWN), commit and ack what is queued (at most
``stop_timeout_s``), exit 0. Exit codes: 0 stopped as asked, 2 refused to start (bad config, keys or store).
``fleet-hub status`` exits 0 while the hub that wrote the registry runs, 1 otherwise. ``fleet-hub publish`` exits 0
with the version published, 1 if the checkpoint is missing or damaged (nothing is published), 2 on a usage error; a
running hub announces the new version within about a second, without a restart. ``fleet-hub rollback``
exits 0 with version N current, 1 if N is not stored or fails its sha256 (nothing changes), 2 on a usage error.
Both append what they did to the roll-out log (fleet/rollout_log.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from pathlib import Path

import hydra
import zmq
from omegaconf import DictConfig, OmegaConf

from configs import CONFIG_DIR
from fleet.config import HubConfig, register_configs
from fleet.process_liveness import process_exists

register_configs()
EXIT_OK, EXIT_REFUSED = 0, 2
COMMANDS = ("status", "publish", "rollback")
LAST_STEPS = 8  # roll-out log lines `fleet-hub status` prints
STALE_AFTER_S = 10.0  # a registry older than this (and at least 5 write intervals) is from a hub that is gone


def _security_line(cfg: HubConfig) -> str:
    if cfg.security.mode == "plaintext":
        return "PLAIN TEXT (no encryption, no authentication: lab network only)"
    from fleet.keys import ALLOWLIST, read_allowlist

    robots = read_allowlist(Path(cfg.security.keys_dir) / ALLOWLIST)["robots"]
    return f"CURVE (keys {cfg.security.keys_dir}, {len(robots)} robots enrolled)"


def run_hub(cfg: DictConfig) -> int:
    """Run the hub from a composed config until SIGTERM / SIGINT; returns the process exit code."""
    from fleet.heap import settle_heap
    from fleet.hub import HubServer
    from fleet.keys import KeyFileError
    from fleet.store import StoreError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        hub_cfg = OmegaConf.to_object(cfg)
        assert isinstance(hub_cfg, HubConfig)
        hub_cfg.validate()
        security = _security_line(hub_cfg)
        hub = HubServer(hub_cfg)
    except KeyFileError as exc:
        print(f"fleet-hub: refusing to start: security.keys_dir: {exc} (make the hub's keys with `fleet-keys init "
              f"{cfg.security.keys_dir}`, or set security.keys_dir)", file=sys.stderr)
        return EXIT_REFUSED
    except (ValueError, StoreError, zmq.ZMQError, OSError) as exc:
        print(f"fleet-hub: refusing to start: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    signal.signal(signal.SIGTERM, lambda *_: hub.request_stop())
    signal.signal(signal.SIGINT, lambda *_: hub.request_stop())
    print(f"fleet-hub: listening on {hub.endpoint}, security {security}, storage {hub.storage.resolve()} "
          f"(credit {hub_cfg.credit_bytes} bytes per robot, heartbeat {hub_cfg.heartbeat_ms} ms), pid {os.getpid()}",
          flush=True)
    hub.heap = settle_heap()  # after start-up, before the first message (fleet/heap.py)
    hub.run()
    totals, robots = hub.registry.totals(), len(hub.registry.robots) + hub.registry.forgotten["robots"]
    print(f"fleet-hub: stopped; this run stored {totals['chunks_in']} chunks "
          f"({totals['duplicates']} duplicates acked again) from {robots} robots", flush=True)
    return EXIT_OK


def status_command(args: list[str]) -> int:
    """Print the fleet registry of a storage dir; 0 while its hub runs, 1 when it is stopped or gone."""
    from fleet.registry import REGISTRY_FILE, format_table, load_registry

    path = Path(args[0] if args else "fleet_data") / REGISTRY_FILE
    try:
        snapshot = load_registry(path)
    except ValueError as exc:
        print(f"fleet-hub status: {exc}", file=sys.stderr)
        return 1
    print(format_table(snapshot))
    hub = snapshot.get("hub", {})
    print(_rollout_lines(hub, Path(args[0] if args else "fleet_data")))
    age = time.time() - float(snapshot.get("time", 0))
    if not hub.get("running", False):
        print("fleet-hub status: the hub has stopped (this is its final registry)", file=sys.stderr)
        return 1
    if age > STALE_AFTER_S or not process_exists(int(hub.get("pid", 0))):
        print(f"fleet-hub status: the hub (pid {hub.get('pid')}) is gone: registry last written {age:.0f} s ago",
              file=sys.stderr)
        return 1
    return 0


def _rollout_lines(hub: dict, storage: Path) -> str:
    from fleet.rollout_log import describe, read_steps

    r = hub.get("rollout") or {}
    lines = [f"roll-out: {r.get('state', 'idle')}; current v{hub.get('trunk_version', 0)}"
             + (f", candidate v{r['candidate']} on canaries {', '.join(r.get('canaries', [])) or '(none yet)'}"
                if r.get("candidate") else ", no candidate")]
    for robot, v in (r.get("verdicts") or {}).items():
        lines.append(f"  canary {robot}: {'pass' if v.get('passed') else 'FAIL'} {v}")
    w = hub.get("watch") or {}
    if w.get("watching"):
        lines.append(f"unit watch: v{w['watching']}, {w.get('judged', 0)} of {w.get('watched', 0)} robots judged")
    lines += [f"  held back: {robot} runs v{v}" for robot, v in sorted((w.get("holds") or {}).items())]
    steps = read_steps(storage, LAST_STEPS)
    lines += [f"  {describe(step)}" for step in steps] or ["  (no roll-out steps logged)"]
    return "\n".join(lines)


def publish_command(args: list[str]) -> int:
    """Store the checkpoint directory as the next trunk version of the hub storing in STORAGE_DIR (default
    fleet_data) and make it current, or with ``--canary`` the candidate; ``--adapters DIR`` packs each robot's
    rebased adapter with it. Prints the version."""
    from fleet.rollout_log import append_step
    from fleet.trunk_store import TrunkStore, TrunkStoreError

    canary = "--canary" in args
    rest = [a for a in args if a != "--canary"]
    adapters = None
    if "--adapters" in rest:
        i = rest.index("--adapters")
        adapters = rest[i + 1] if i + 1 < len(rest) else "-"
        rest = rest[:i] + rest[i + 2:] + (["-"] if adapters.startswith("-") else [])
    if len(rest) not in (1, 2) or any(a.startswith("-") for a in rest):
        print("usage: fleet-hub publish CHECKPOINT [STORAGE_DIR] [--canary] [--adapters DIR]", file=sys.stderr)
        return 2
    storage = rest[1] if len(rest) > 1 else "fleet_data"
    store = TrunkStore(storage)
    try:
        rec = store.publish(rest[0], candidate=canary, adapters=adapters)
    except TrunkStoreError as exc:
        print(f"fleet-hub publish: refused: {exc}", file=sys.stderr)
        return 1
    robots = sorted(p.stem for p in store.dir.glob(f"v{rec.version:06d}.robots/*.json"))
    append_step(storage, "published_candidate" if canary else "published", "hand", rec.version,
                sha256=rec.sha256, rebased_adapters=robots)
    renumbered = (f" (the checkpoint says trunk_version {rec.source_trunk_version}: renumbered)"
                  if rec.source_trunk_version != rec.version else "")
    role = " as the candidate (canaries first)" if canary else ""
    print(f"published trunk v{rec.version}{renumbered}{role}: {rec.size} bytes, sha256 {rec.sha256}, {rec.path}"
          + (f"; rebased adapters for {', '.join(robots)}" if robots else ""))
    return 0


def rollback_command(args: list[str]) -> int:
    """Make stored trunk version ``args[0]`` current for every robot (verified first), ending any trial."""
    from fleet.rollout_log import append_step
    from fleet.trunk_store import TrunkStore, TrunkStoreError

    if len(args) not in (1, 2) or not args[0].isdigit() or int(args[0]) < 1:
        print("usage: fleet-hub rollback N [STORAGE_DIR]   (N: a stored trunk version, >= 1)", file=sys.stderr)
        return 2
    storage = args[1] if len(args) > 1 else "fleet_data"
    store = TrunkStore(storage)
    try:
        before = store.current()
        rec, dropped = store.rollback(int(args[0]))
    except (TrunkStoreError, OSError) as exc:
        print(f"fleet-hub rollback: refused: {exc}", file=sys.stderr)
        return 1
    append_step(storage, "rollback", "hand", rec.version, previous=before.version if before else 0,
                candidate_dropped=dropped.version if dropped else 0)
    print(f"trunk v{rec.version} is current (was v{before.version if before else 0})"
          + (f"; candidate v{dropped.version} dropped" if dropped else ""))
    return 0


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="hub")
def _hydra_main(cfg: DictConfig) -> None:
    sys.exit(run_hub(cfg))


def hub_main() -> None:
    """Console entry point: an operator command, or the hub daemon (a Hydra app)."""
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        command = {"publish": publish_command, "rollback": rollback_command}.get(sys.argv[1], status_command)
        sys.exit(command(sys.argv[2:]))
    _hydra_main()


if __name__ == "__main__":
    hub_main()
