"""fleet-hub: the hub daemon's Hydra app, plus the operator's status command.

    fleet-hub storage_dir=/data/hub security.keys_dir=/etc/fleet/keys bind=tcp://0.0.0.0:5555
    fleet-hub status [STORAGE_DIR]     the fleet registry as a table (default storage dir: fleet_data)
    fleet-hub publish CHECKPOINT [STORAGE_DIR]   store a checkpoint as the next trunk version and make it current

SIGTERM / SIGINT: refuse new chunks (SHUTTING_DOWN), commit and ack what is queued (at most
``stop_timeout_s``), exit 0. Exit codes: 0 stopped as asked, 2 refused to start (bad config, keys or store).
``fleet-hub status`` exits 0 while the hub that wrote the registry runs, 1 otherwise. ``fleet-hub publish`` exits 0
with the version published, 1 if the checkpoint is missing or damaged (nothing is published), 2 on a usage error; a
running hub announces the new version within about a second, without a restart.
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
COMMANDS = ("status", "publish")
STALE_AFTER_S = 10.0  # a registry older than this (and at least 5 write intervals) is from a hub that is gone


def _security_line(cfg: HubConfig) -> str:
    if cfg.security.mode == "plaintext":
        return "PLAIN TEXT (no encryption, no authentication: lab network only)"
    from fleet.keys import ALLOWLIST, read_allowlist

    robots = read_allowlist(Path(cfg.security.keys_dir) / ALLOWLIST)["robots"]
    return f"CURVE (keys {cfg.security.keys_dir}, {len(robots)} robots enrolled)"


def run_hub(cfg: DictConfig) -> int:
    """Run the hub from a composed config until SIGTERM / SIGINT; returns the process exit code."""
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
    age = time.time() - float(snapshot.get("time", 0))
    if not hub.get("running", False):
        print("fleet-hub status: the hub has stopped (this is its final registry)", file=sys.stderr)
        return 1
    if age > STALE_AFTER_S or not process_exists(int(hub.get("pid", 0))):
        print(f"fleet-hub status: the hub (pid {hub.get('pid')}) is gone: registry last written {age:.0f} s ago",
              file=sys.stderr)
        return 1
    return 0


def publish_command(args: list[str]) -> int:
    """Store the checkpoint directory ``args[0]`` as the next trunk version of the hub storing in ``args[1]``
    (default fleet_data) and make it current; prints the version."""
    from fleet.trunk_store import TrunkStore, TrunkStoreError

    if len(args) not in (1, 2) or args[0].startswith("-"):
        print("usage: fleet-hub publish CHECKPOINT [STORAGE_DIR]", file=sys.stderr)
        return 2
    store = TrunkStore(args[1] if len(args) > 1 else "fleet_data")
    try:
        rec = store.publish(args[0])
    except TrunkStoreError as exc:
        print(f"fleet-hub publish: refused: {exc}", file=sys.stderr)
        return 1
    renumbered = (f" (the checkpoint says trunk_version {rec.source_trunk_version}: renumbered)"
                  if rec.source_trunk_version != rec.version else "")
    print(f"published trunk v{rec.version}{renumbered}: {rec.size} bytes, sha256 {rec.sha256}, {rec.path}")
    return 0


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="hub")
def _hydra_main(cfg: DictConfig) -> None:
    sys.exit(run_hub(cfg))


def hub_main() -> None:
    """Console entry point: an operator command, or the hub daemon (a Hydra app)."""
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        command = publish_command if sys.argv[1] == "publish" else status_command
        sys.exit(command(sys.argv[2:]))
    _hydra_main()


if __name__ == "__main__":
    hub_main()
