"""The demo's phases, run in order by :class:`DemoRun`: pretrain, sim oracle, keys and hub, agents, adaptation
with faults, the fleet round, clean shutdown. Every part is a separate process (fleet/demo/processes.py); the
demo itself only starts them, signals them and reads their files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from fleet.demo import commands
from fleet.demo.config import DemoConfig
from fleet.demo.fleet_watch import FleetView, last_line, registry_robots, rollout_event, wait_for
from fleet.demo.processes import Child, PartFailed, ProcessGroups
from fleet.demo.progress import Progress
from fleet.demo.record import SimReturn
from fleet.demo.units import Unit
from fleet.trunk_store import TrunkStore


class DemoRun:
    """One run of the demo in ``run``: the parts it started and what it saw (module docstring)."""

    def __init__(self, cfg: DemoConfig, run: Path, units: list[Unit], procs: ProcessGroups, progress: Progress,
                 port: int):
        self.cfg, self.run, self.units, self.procs, self.progress, self.port = cfg, run, units, procs, progress, port
        self.hub_dir, self.trunk_v1 = run / "hub", run / "trunk_v1"
        self.hub: Child | None = None
        self.agents: dict[str, Child] = {}
        self.view = FleetView(run / "agents", [u.robot_id for u in units])
        self.spool_starts: dict[str, list[int]] = {}  # robot -> first sequence number of each restarted process
        self.faults: list[dict[str, Any]] = []
        self.sim_oracle: dict[str, SimReturn] = {}
        self.candidate = 0  # the fleet round's trunk version (0: none published)
        self.outcome = ""  # what became of it, in words
        self.problems: list[str] = []  # what broke (the demo exits non-zero)
        self.t0 = time.monotonic()

    # -- phase 1 -------------------------------------------------------------------------------------
    def pretrain(self) -> None:
        """fleet-train on every demo type; its checkpoint, renumbered as trunk v1, is what the fleet starts on."""
        child = self.procs.start("pretrain", commands.pretrain_command(self.cfg, self.run))
        total = self.cfg.pretrain.iterations

        def tick() -> None:
            line = last_line(child.log, "[train] it ")
            done = int(line.split()[2].split("/")[0]) if line else 0
            self.progress.update(done / total, [line.removeprefix("[train] ") or "starting (building the worlds)"])

        wait_for(lambda: not child.alive(), 1e9, tick)
        if child.popen.returncode != 0:
            raise PartFailed(f"pretrain exited {child.popen.returncode}; see {child.log}")
        from shared_policy.checkpoint import load_checkpoint, save_checkpoint

        policy, manifest = load_checkpoint(self.run / "pretrain" / "checkpoints" / "latest")
        # the hub numbers trunks from 1: the fleet's first trunk is v1, whatever iteration sim training ended at
        save_checkpoint(self.trunk_v1, policy, trunk_version=1, config=manifest.get("config"))
        self.progress.done(last_line(child.log, "[train] it ").removeprefix("[train] "))

    # -- phase 2 -------------------------------------------------------------------------------------
    def oracle(self) -> None:
        """The pretrained trunk in sim per type, on the units' episode length: what sim promised."""
        child = self.procs.start("eval", commands.eval_command(self.cfg, self.run, self.trunk_v1))
        wait_for(lambda: not child.alive(), 1e9, lambda: self.progress.update(
            len(commands.parse_eval(child.output())) / len(self.cfg.types), ["evaluating"]))
        self.sim_oracle = commands.parse_eval(child.output())
        missing = set(self.cfg.types) - set(self.sim_oracle)
        if child.popen.returncode != 0 or missing:
            raise PartFailed(f"fleet-eval exited {child.popen.returncode} without results for {sorted(missing)}; "
                             f"see {child.log}")
        self.progress.done(", ".join(f"{hw} {r.mean:.1f} +- {r.ci95:.1f}" for hw, r in self.sim_oracle.items()))

    # -- phase 3 -------------------------------------------------------------------------------------
    def hub_up(self) -> None:
        """The hub's keys, every unit enrolled, trunk v1 published, the hub started with CURVE."""
        keys = self.run / "keys"
        self.procs.run("keys", [commands.script("fleet-keys"), "init", str(keys)], 60)
        for i, unit in enumerate(self.units):
            self.procs.run("keys", [commands.script("fleet-keys"), "enrol", str(keys), unit.robot_id], 60)
            self.progress.update((i + 1) / (len(self.units) + 2), [f"enrolled {unit.robot_id}"])
        self.procs.run("publish", [commands.script("fleet-hub"), "publish", str(self.trunk_v1), str(self.hub_dir)], 120)
        self.start_hub()
        canaries = [u.robot_id for u in self.units if u.canary]
        self.progress.done(f"hub on 127.0.0.1:{self.port} (CURVE, {len(self.units)} robots enrolled), trunk v1 "
                           f"published, canaries {', '.join(canaries)}")

    def start_hub(self) -> float:
        """Start the hub; returns the seconds until it listens."""
        t = time.monotonic()
        canaries = [u.robot_id for u in self.units if u.canary]
        self.hub = self.procs.start("hub", commands.hub_command(self.cfg, self.run, self.port, canaries))
        hub = self.hub
        ok = wait_for(lambda: not hub.alive() or "listening on" in hub.output(),
                      60, lambda: None, 0.1)
        if not ok or not hub.alive():
            raise PartFailed(f"the hub did not start; see {hub.log}")
        return time.monotonic() - t

    # -- phase 4 -------------------------------------------------------------------------------------
    def agents_up(self) -> None:
        """One robot agent per unit; wait until every one is connected to the hub."""
        for unit in self.units:
            self.start_agent(unit)
        connected = wait_for(lambda: self.view.all(lambda s: (s.get("uplink") or {}).get("connected")),
                             self.cfg.agents.connect_timeout_s, self._tick_fleet(self.cfg.agents.connect_timeout_s))
        self._check_alive()
        if not connected:
            raise PartFailed(f"not every unit connected within {self.cfg.agents.connect_timeout_s:.0f} s: "
                             + "; ".join(self.view.lines()))
        self.progress.done(f"{len(self.units)} agents connected: " + ", ".join(
            f"{u.robot_id} ({u.hardware}, outside training: {', '.join(u.outside_training_range) or 'none'})"
            for u in self.units))

    def start_agent(self, unit: Unit) -> None:
        """Start (or restart, on the same state_dir) the unit's agent."""
        self.agents[unit.robot_id] = self.procs.start(unit.robot_id, commands.agent_command(
            self.cfg, self.run, self.port, unit, self.trunk_v1))

    def _tick_fleet(self, span: float, then: float | None = None):
        """A progress tick for the fleet phases; it also fails the phase at once if a part died."""
        start = time.monotonic() if then is None else then

        def tick() -> None:
            self._check_alive()
            self.progress.update((time.monotonic() - start) / span, self.view.lines())
        return tick

    def _check_alive(self) -> None:
        dead = [f"{r} exited {c.popen.returncode} (see {c.log})" for r, c in self.agents.items() if not c.alive()]
        if self.hub is not None and not self.hub.alive():
            dead.append(f"hub exited {self.hub.popen.returncode} (see {self.hub.log})")
        if dead:
            raise PartFailed("a part died: " + "; ".join(dead))

    # -- phase 5 -------------------------------------------------------------------------------------
    def adapt(self) -> None:
        """Units adapt on-robot and stream; halfway, the hub and one agent are SIGKILLed and restarted."""
        span, start = self.cfg.agents.adapt_s, time.monotonic()
        tick = self._tick_fleet(span, start)
        wait_for(lambda: time.monotonic() - start >= span / 2, span, tick)
        self._check_alive()
        if self.cfg.faults.kill_hub:
            self.kill_hub()
        if self.cfg.faults.kill_agent:
            self.kill_agent(self.cfg.faults.agent or self.units[-1].robot_id)
        wait_for(lambda: time.monotonic() - start >= span, span, tick)
        self._check_alive()
        self.progress.done("; ".join(self.view.lines()[1:]))

    def kill_hub(self) -> None:
        """SIGKILL the hub's process group, leave it down ``faults.down_s``, restart it on the same store."""
        at = time.monotonic() - self.t0
        before = {r: (s.get("uplink") or {}).get("connects", 0) for r, s in self.view.statuses().items()}
        self.procs.kill(self.hub)
        self.progress.note(f"FAULT: hub (pid {self.hub.pid}) killed with SIGKILL at {at:.0f} s")
        time.sleep(self.cfg.faults.down_s)
        listening = self.start_hub()

        def reconnected() -> bool:  # a new handshake with the new hub, not a connection flag still set from before
            statuses = self.view.statuses()
            return all((statuses.get(r, {}).get("uplink") or {}).get("connects", 0) > n for r, n in before.items())

        back = wait_for(reconnected, 120, lambda: None)
        if not back:
            self.problems.append("after the hub's restart not every unit reconnected within 120 s")
        back_after = time.monotonic() - self.t0 - at
        self.faults.append({"what": "hub SIGKILL + restart", "at_s": round(at, 1), "back_after_s": round(back_after, 1),
                            "listening_after_restart_s": round(listening, 1), "all_reconnected": bool(back)})
        self.progress.note(f"hub restarted (pid {self.hub.pid}); every unit back after {back_after:.1f} s")

    def kill_agent(self, robot: str) -> None:
        """SIGKILL a unit's agent and its whole group (stand-in, learner); restart it on the same state_dir."""
        at = time.monotonic() - self.t0
        child = self.agents[robot]
        self.procs.kill(child)
        state = self.run / "agents" / robot / "state"
        ids = json.loads((state / "spool" / "ids.json").read_text())  # where the next process's numbers start
        self.spool_starts.setdefault(robot, []).append(int(ids["seq"]))
        pending = sum(1 for _ in (state / "spool").glob("seg-*"))
        self.progress.note(f"FAULT: agent {robot} (pid {child.pid}) killed with SIGKILL at {at:.0f} s "
                           f"({pending} spool segment(s) on disk)")
        time.sleep(self.cfg.faults.down_s)
        self.start_agent(next(u for u in self.units if u.robot_id == robot))
        new_pid = self.agents[robot].pid
        ok = wait_for(lambda: (s := self.view.statuses()[robot]).get("pid") == new_pid
                      and (s.get("uplink") or {}).get("connected"), 120, lambda: None)
        back_after = time.monotonic() - self.t0 - at
        if not ok:
            self.problems.append(f"agent {robot} did not come back connected within 120 s of its restart")
        self.faults.append({"what": f"agent {robot} SIGKILL + restart", "robot": robot, "at_s": round(at, 1),
                            "back_after_s": round(back_after, 1), "reconnected": bool(ok)})
        self.progress.note(f"agent {robot} restarted on its state_dir (pid {new_pid}); back after {back_after:.1f} s")

    # -- phase 6 -------------------------------------------------------------------------------------
    def fleet_round(self) -> None:
        """fleet-learn publishes a candidate; the hub tries it on the canaries and promotes or rolls it back;
        every unit adopts the promoted trunk and runs a few episodes on it."""
        lc = self.cfg.learn
        child = self.procs.start("learn", commands.learn_command(self.cfg, self.run))

        def tick() -> None:
            line = last_line(child.log, "[learn] round")
            done = float(line.split("update ")[1].split("/")[0]) / lc.updates if "update " in line else 0.0
            latest = last_line(child.log, "[learn]").removeprefix("[learn] ")
            self.progress.update(done, [latest or "filling the replay", *self.view.lines()[:1]])

        wait_for(lambda: not child.alive(), 1e9, tick)
        code = child.popen.returncode
        if code == 3:
            self.outcome = "the sim gate refused the fleet round's candidate: nothing was published, the fleet stays on v1"
            self.progress.note(self.outcome + f" (reasons in {child.log})")
            return
        if code != 0:
            raise PartFailed(f"fleet-learn exited {code}; see {child.log}")
        store = TrunkStore(self.hub_dir)
        cand = store.candidate() or store.current()
        self.candidate = cand.version if cand else 0
        self.progress.note(f"fleet-learn published candidate trunk v{self.candidate} with rebased adapters")
        start = time.monotonic()
        verdict = wait_for(lambda: rollout_event(self.hub_dir, ("promoted", "rolled_back"), self.candidate),
                           lc.rollout_timeout_s, self._tick_fleet(lc.rollout_timeout_s, start))
        self._check_alive()
        if not verdict:
            raise PartFailed(f"no canary verdict on v{self.candidate} within {lc.rollout_timeout_s:.0f} s")
        if verdict["event"] == "rolled_back":
            self.outcome = (f"the canaries rolled trunk v{self.candidate} back (their returns fell): the fleet "
                            f"stays on v1")
            self.progress.note(self.outcome)
            return
        self.progress.note(f"trunk v{self.candidate} passed its canaries and was promoted; waiting for every unit")
        adopted = wait_for(lambda: self.view.all(lambda s: s.get("trunk_version") == self.candidate),
                           lc.rollout_timeout_s, self._tick_fleet(lc.rollout_timeout_s, start))
        if not adopted:
            raise PartFailed(f"not every unit adopted v{self.candidate}: " + "; ".join(self.view.lines()))
        base = {r: int(s.get("episodes", 0)) for r, s in self.view.statuses().items()}
        more = wait_for(lambda: all(int(s.get("episodes", 0)) >= base[r] + lc.episodes_after
                                    for r, s in self.view.statuses().items()),
                        lc.rollout_timeout_s, self._tick_fleet(lc.rollout_timeout_s, start))
        self._check_alive()
        if not more:
            raise PartFailed(f"units did not finish {lc.episodes_after} episodes on v{self.candidate}")
        self.outcome = f"trunk v{self.candidate} promoted and running on every unit with its rebased adapter"
        self.progress.done(self.outcome)

    # -- phase 7 -------------------------------------------------------------------------------------
    def shutdown(self) -> list[str]:
        """SIGTERM every agent (each drains its spool to the hub first), then the hub; then no process the demo
        started may be left. Returns what had to be killed (each an error)."""
        problems, timeout = [], self.cfg.stop_timeout_s
        live = [c for c in self.agents.values() if c.alive()]
        for child in live:  # all at once: their drains overlap (a second SIGTERM would abort the episode)
            child.popen.terminate()
        for child in live:
            if not self.procs.terminate(child, timeout, send=False):
                problems.append(f"{child.name} (pid {child.pid}) did not stop within {timeout:.0f} s of SIGTERM")
        if self.hub is not None and self.hub.alive() and not self.procs.terminate(self.hub, timeout):
            problems.append(f"hub (pid {self.hub.pid}) did not stop within {timeout:.0f} s of SIGTERM")
        problems += [f"left behind: {p}" for p in self.procs.stop_all(timeout)]
        return problems

    def connected_robots(self) -> list[str]:
        """Robots in the hub's registry (the last hub's run)."""
        return sorted(registry_robots(self.hub_dir))
