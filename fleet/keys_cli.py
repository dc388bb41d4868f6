"""fleet-keys: create the hub's key pair, enrol, revoke and list robots (see fleet/keys.py for the layout)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fleet.keys import ALLOWLIST, HUB_PUBLIC, KeyFileError, enrol, init_hub, read_allowlist, revoke


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleet-keys", description="CURVE keys of the fleet hub and its robots.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("init", help="create the hub's key pair and an empty allow-list in DIR")
    s.add_argument("dir", type=Path)
    s = sub.add_parser("enrol", help="create a robot's key pair, write its files, allow its key")
    s.add_argument("dir", type=Path)
    s.add_argument("robot_id")
    s.add_argument("--out", type=Path, default=None, help="where the robot's files go (default DIR/robots/ID)")
    s.add_argument("--rekey", action="store_true", help="replace the key of an enrolled robot")
    s = sub.add_parser("revoke", help="take a robot off the allow-list (a running hub refuses it from then on)")
    s.add_argument("dir", type=Path)
    s.add_argument("robot_id")
    s = sub.add_parser("list", help="the enrolled and revoked robots")
    s.add_argument("dir", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one fleet-keys command; exit status 0 on success, 1 with the reason on stderr otherwise."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "init":
            pub, sec = init_hub(args.dir)
            print(f"hub key pair: {pub} (public), {sec} (secret, mode 0600); allow-list {args.dir / ALLOWLIST}")
        elif args.command == "enrol":
            out = enrol(args.dir, args.robot_id, args.out, args.rekey)
            print(f"enrolled {args.robot_id}: its keys are in {out} (robot.key_secret, robot.key, {HUB_PUBLIC}).\n"
                  f"Copy that directory to the robot (keep robot.key_secret mode 0600, then delete it here) and set "
                  f"the uplink's security.keys_dir to it.")
        elif args.command == "revoke":
            if not revoke(args.dir, args.robot_id):
                print(f"fleet-keys: {args.robot_id} is not enrolled", file=sys.stderr)
                return 1
            print(f"revoked {args.robot_id}: a running hub refuses its key within its allow-list reload interval")
        else:
            data = read_allowlist(args.dir / ALLOWLIST)
            for robot, entry in sorted(data["robots"].items()):
                print(f"{robot}\tenrolled\t{entry['public_key']}\t{entry.get('enrolled', '')}")
            for robot, entry in sorted(data.get("revoked", {}).items()):
                print(f"{robot}\trevoked\t{entry.get('public_key', '')}\t{entry.get('revoked', '')}")
    except (KeyFileError, ValueError, OSError) as exc:
        print(f"fleet-keys: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
