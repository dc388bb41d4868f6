"""How often the adapter guard rolls back updates that are no worse, and how often it catches worse ones.

Feeds the agent's own ``AdapterGuard`` (robot_agent/adapter_guard.py, the settings of an adapter preset) simulated
episode returns, normal with a stated mean and standard deviation, in the order an agent runs them when its
learner keeps up: the kept version until the reference has a trial's episodes, then each candidate's trial. After
a keep the next update is already waiting (a trial's steps are more than ``steps_per_update``), so it goes on trial
at once; after a rollback the waiting update is dropped and the learner, back on the kept weights with the
experience it holds, needs up to ``steps_per_update`` more steps, so the kept version runs ``--gap-episodes``
episodes first (2: 1,000 steps of 500-step cart-pole episodes, exact after 4-episode trials; after 3-episode
trials about half of the rollbacks need only 1, so the 3-episode figures read slightly low). No robot, learner or network: what it measures is the decision rule along a chain of
decisions, which one-off arithmetic (one Welch test, about 5%) misses, because the reference is the *best* kept
version so far, a maximum over noisy means.

- ``equal``: every update's true mean equals the first version's; the share of decisions rolled back is the
  guard's cost in noise alone. ``first``: the first decision alone (the trial against the first version's own
  episodes, no best-of selection yet).
- ``drop D``: after ``--warmup`` decisions of equal updates, one update whose true mean is D episode standard
  deviations lower; the share of chains in which it is rolled back. Along a chain the reference sits above the
  true return, so this rises with the equal updates' rollbacks: it is the same bias, not added power.

    python benchmarks/guard_noise.py                          # both presets, cv 0.05 / 0.15 / 0.3, 4-episode trials
    python benchmarks/guard_noise.py --guard-episodes 3 --out benchmarks/results/guard_noise_trial3.json  # as fleet_round
    python benchmarks/guard_noise.py --presets solo --cv 0.2 --chains 4000

``cv`` is the episode standard deviation over the mean return (the floor is a fraction of the mean, so it matters
only through cv; the standard-error and rank rules do not depend on it). Returns are taken as positive, as on the
cart-pole types; on returns near zero or negative the floor works on ``abs(mean)`` and rolls back more. Last line,
one figure per cv, e.g. ``guard_noise cv=0.05/0.15/0.3 solo_equal=0.14/0.14/0.14 solo_first=0.05/0.05/0.05
solo_drop1=... fleet_equal=...``.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from result_record import write_result  # beside this script

from robot_agent.adapter_guard import AdapterGuard, Verdict
from robot_agent.config import AdapterTrainingConfig, adapter_preset, apply_adapter_preset

DROPS = (0.5, 1.0, 2.5)


def guard_for(preset: str, episodes: int | None = None) -> AdapterGuard:
    """The guard an agent on ``adapter_preset=<preset>`` builds (its guard_* settings; ``episodes``: a trial's
    length other than the preset's)."""
    a = AdapterTrainingConfig()
    apply_adapter_preset(a, preset)
    return AdapterGuard(0, episodes=episodes or a.guard_episodes, tolerance=a.guard_tolerance,
                        reference_episodes=a.guard_reference_episodes, reference_decisions=a.guard_reference_decisions,
                        floor=a.guard_floor)


def run_chain(guard: AdapterGuard, means: list[float], sd: float, rng: np.random.Generator,
              gap_episodes: int = 0) -> list[bool]:
    """Decide ``len(means)`` updates in a row, the k-th update's episodes drawn from N(means[k - 1], sd) (the
    first kept version's too from N(means[0], sd)), the kept version running ``gap_episodes`` episodes after each rollback
    before the next update is offered; returns, per update, whether it was rolled back. A kept update's mean is
    the one its episodes keep being drawn from."""
    true_mean = {0: means[0]}
    rolled: list[bool] = []

    def episode() -> Verdict | None:
        version = guard.version_to_run()
        return guard.record(version, float(rng.normal(true_mean[version], sd)))

    for k, mean in enumerate(means, start=1):
        if rolled and rolled[-1]:
            for _ in range(gap_episodes):  # no candidate: these are the kept version's
                episode()
        true_mean[k] = mean
        guard.offer(k)
        while (verdict := episode()) is None:
            pass
        rolled.append(not verdict.kept)
    return rolled


def measure(preset: str, cv: float, args: argparse.Namespace) -> dict[str, float]:
    """Shares of equal updates rolled back and of dropped updates caught, for one preset and cv."""
    rng = np.random.default_rng(args.seed)
    mean, sd, chains = 100.0, 100.0 * cv, args.chains

    def chain(means: list[float]) -> list[bool]:
        return run_chain(guard_for(preset, args.guard_episodes), means, sd, rng, args.gap_episodes)

    equal = [chain([mean] * args.decisions) for _ in range(chains)]
    first = float(np.mean([c[0] for c in equal]))  # the first decision: one comparison, no best-of selection
    per_chain = np.mean(equal, axis=1)  # decisions in one chain share its references: the chain is the sample
    out = {"equal_rolled_back": float(np.mean(equal)), "first_decision_rolled_back": first,
           "equal_ci95": float(1.96 * per_chain.std(ddof=1) / math.sqrt(chains))}
    for d in DROPS:
        caught = [chain([mean] * args.warmup + [mean - d * sd])[-1] for _ in range(chains)]
        out[f"drop{d:g}_caught"] = float(np.mean(caught))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", nargs="+", default=["solo", "fleet"], help="adapter presets (configs/adapter_preset/)")
    ap.add_argument("--cv", type=float, nargs="+", default=[0.05, 0.15, 0.3],
                    help="episode sd / mean return (the fleet runs' guard references: 10th-90th percentile 0.02-0.32, median 0.15)")
    ap.add_argument("--chains", type=int, default=2000, help="chains per measure")
    ap.add_argument("--decisions", type=int, default=24, help="equal updates decided per chain")
    ap.add_argument("--warmup", type=int, default=8, help="equal updates before the dropped one")
    ap.add_argument("--guard-episodes", type=int, default=None,
                    help="a trial's episodes (adapter.guard_episodes; default: the preset's, 4; fleet_round runs 3)")
    ap.add_argument("--gap-episodes", type=int, default=2,
                    help="kept-version episodes after a rollback before the next update (steps_per_update / episode)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/guard_noise.json")
    args = ap.parse_args()
    for preset in args.presets:
        adapter_preset(preset)  # an unknown name is refused here, naming the known ones
    rows = []
    for preset in args.presets:
        for cv in args.cv:
            r = measure(preset, cv, args)
            print(f"{preset:6s} cv={cv:<4g} equal updates rolled back {r['equal_rolled_back']:.3f} "
                  f"+- {r['equal_ci95']:.3f} (first decision alone "
                  f"{r['first_decision_rolled_back']:.3f}); caught: "
                  + ", ".join(f"drop {d:g} sd {r[f'drop{d:g}_caught']:.2f}" for d in DROPS), flush=True)
            rows.append({"preset": preset, "cv": cv, **r})

    def per_cv(preset: str, key: str) -> str:
        return "/".join(f"{r[key]:.2f}" for r in rows if r["preset"] == preset)

    line = "guard_noise cv=" + "/".join(f"{cv:g}" for cv in args.cv) + " " + " ".join(
        f"{p}_equal={per_cv(p, 'equal_rolled_back')} {p}_first={per_cv(p, 'first_decision_rolled_back')} "
        f"{p}_drop1={per_cv(p, 'drop1_caught')} {p}_drop2.5={per_cv(p, 'drop2.5_caught')}" for p in args.presets)
    write_result(args.out, line, {"args": vars(args), "rows": rows, "normal_returns": True, "mean_return": 100.0})

if __name__ == "__main__":
    main()
