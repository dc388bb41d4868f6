"""Every command in README.md's ```bash blocks runs, as a user types it, with a short budget.

The table COMMANDS below says, for each documented command, what the test substitutes (placeholders such as
``<dir>`` become artefacts this module makes; paths a CI machine cannot write become temporary ones) and which
short-budget overrides it appends. A README command without an entry fails, so a new command cannot go
untested; an entry whose command left the README fails too, so the table cannot go stale. Commands run
through bash (quotes, ``$(which ...)``) with the venv's console scripts first on PATH, in one working
directory shared by the module, and must exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The smallest training that still runs a full PPO iteration (rollout, update, checkpoint).
TINY = "sim.num_envs=8 policy=small algorithm.num_steps_per_env=8"
COMMAND_TIMEOUT_S = 240
QUICK_TEST = f"{REPO}/tests/configs/test_compose.py::test_package_data_ships_the_config_tree"


@dataclass(frozen=True)
class Budget:
    """How the test runs one README command: text substitutions, then overrides appended.

    Replacement values may name artefacts in braces ({cartpole_checkpoint}, {arms_checkpoint}, {state},
    {venv}): ReadmeRunner makes each on first use. ``needs`` lists README commands whose files this one reads.
    """

    replace: dict[str, str] = field(default_factory=dict)
    append: str = ""
    needs: tuple[str, ...] = ()
    timeout_s: float = COMMAND_TIMEOUT_S  # the whole loop (make demo) needs more than one app
    expect: tuple[str, ...] = ()  # text the output must contain: the command did its job, not only exit 0


AGENT = ("robot-agent checkpoint=outputs/<date>/<time>/checkpoints/latest hardware=cartpole task=cartpole_swingup "
         "robot_id=unit-7 state_dir=/var/lib/robot-agent trunk_dir=/var/lib/robot-agent/trunks")
REACH = "fleet-train task=reach 'hardware=[arm2_planar,arm3_planar,arm7]' iterations=300"
MULTIRUN = "fleet-train --multirun algorithm.entropy_coef=0.0,0.01"
KEYS_INIT, KEYS_ENROL = "fleet-keys init fleet_keys", "fleet-keys enrol fleet_keys unit-7"
UPLINK_AGENT = ("robot-agent checkpoint=<dir> hardware=cartpole robot_id=unit-7 state_dir=unit-7 adapter_preset=fleet "
                "uplink.enabled=true uplink.endpoint=tcp://127.0.0.1:5555 uplink.security.keys_dir=fleet_keys/robots/unit-7")
VAR_LIB = {"/var/lib/robot-agent": "{state}"}
LEARN_TINY = ("batch_size=8 replay.sequence_length=16 sim.num_envs=8 sim.ppo.num_steps_per_env=8 rebase.steps=20 "
              "learner.learning_rate=1e-6 sim.ppo.learning_rate=1e-6 sim.ppo.schedule=fixed gate.tolerance=0.99")  # a robot's path; CI cannot (and must not) write there

# Every README command (continuations joined, comment dropped) -> how this test runs it.
COMMANDS: dict[str, Budget] = {
    # `make demo` and `make test` run their real recipes against a stand-in venv whose install stamp is
    # fresh (installing needs the network). `make demo` is run as make prints it (-n): the whole loop it
    # starts is tests/fleet/demo/test_demo.py's shortened demo, the same app with the same budget; running it
    # twice would double the suite's longest test. `make test` runs one quick test of the suite (the whole
    # suite would include this module).
    "make demo": Budget(replace={"make demo": "make -n demo VENV={venv} ARGS='robots=6'"},
                        expect=("WANDB_MODE=${WANDB_MODE:-offline} ", "/venv/bin/fleet-demo robots=6")),
    'make demo ARGS="robots=8 agents.adapt_s=300"':
        Budget(replace={"make demo": "make -n demo VENV={venv}"}, expect=("/venv/bin/fleet-demo robots=8 agents.adapt_s=300",)),
    # the locomotion variant is an hour of real-time robots: here Hydra composes it and prints it (--cfg job)
    "fleet-demo --config-name demo_locomotion": Budget(append="--cfg job", expect=("go1_like", "go2_like", "locomotion")),
    "fleet-eval report outputs/demo/<time>": Budget(replace={"outputs/demo/<time>": "{demo_run}"},
                                                     expect=("index.html",)),
    "fleet-keys enrol fleet_keys unit-9": Budget(needs=(KEYS_INIT,), expect=("enrolled unit-9",)),
    "fleet-keys list fleet_keys": Budget(needs=("fleet-keys enrol fleet_keys unit-9",), expect=("unit-9\t",)),
    "fleet-keys revoke fleet_keys unit-9": Budget(needs=("fleet-keys enrol fleet_keys unit-9",),
                                                  expect=("revoked unit-9",)),
    "make test": Budget(replace={"make test": f"PYTEST_ADDOPTS='-p no:cacheprovider {QUICK_TEST}' "
                                              "make test VENV={venv}"}, expect=("1 passed",)),
    REACH: Budget(replace={"iterations=300": "iterations=1"}, append=TINY,
                  expect=("[train] it 1/1", "[train] checkpoint ->")),
    "fleet-train task=locomotion 'hardware=[go2_like]' sim.num_envs=2048 logger=wandb":
        Budget(replace={"sim.num_envs=2048": "sim.num_envs=8"}, append="iterations=1 policy=small "
               "algorithm.num_steps_per_env=8", expect=("locomotion on go2_like",)),
    "fleet-train resume=outputs/<date>/<time>/checkpoints/latest iterations=100":
        Budget(replace={"outputs/<date>/<time>/checkpoints/latest": "{cartpole_checkpoint}",
                        "iterations=100": "iterations=1"}, append=TINY,
               expect=("resumed from", "[train] it 2/2")),
    MULTIRUN:
        Budget(append=f"iterations=1 {TINY}",
               expect=("#0 : algorithm.entropy_coef=0.0 ", "#1 : algorithm.entropy_coef=0.01 ")),
    # data-parallel on CPU: two ranks through gloo (nccl needs two GPUs; benchmarks/cuda_pretrain.py covers it)
    "torchrun --standalone --nproc_per_node=2 $(which fleet-train) ...":
        Budget(replace={" ...": f" iterations=1 {TINY}"}, expect=("2 ranks hold identical weights: True",)),
    "fleet-eval checkpoint=<dir> task=reach 'hardware=[arm7]' episodes=100":
        Budget(replace={"<dir>": "{arms_checkpoint}", "episodes=100": "episodes=2"}, append="sim.num_envs=2",
               expect=("[eval] reach on arm7", "95% CI, 2 episodes")),
    AGENT: Budget(replace={"outputs/<date>/<time>/checkpoints/latest": "{cartpole_checkpoint}", **VAR_LIB},
                  append="max_steps=50", expect=("[agent unit-7] cartpole at 50 Hz",)),
    "robot-agent status /var/lib/robot-agent": Budget(replace=VAR_LIB, needs=(AGENT,), expect=('"robot_id": "unit-7"',)),
    "robot-agent estop /var/lib/robot-agent": Budget(replace=VAR_LIB, needs=(AGENT,), expect=("e-stop engaged",)),
    "robot-agent clear-estop /var/lib/robot-agent": Budget(replace=VAR_LIB, needs=(AGENT,),
                                                           expect=("e-stop clear requested",)),
    KEYS_INIT: Budget(expect=("hub key pair:",)),
    KEYS_ENROL: Budget(needs=(KEYS_INIT,), expect=("enrolled unit-7",)),
    # the daemon runs until signalled: here it stops by itself, on a port of its own
    "fleet-hub storage_dir=fleet_data security.keys_dir=fleet_keys":
        Budget(append="run_for_s=2 bind='tcp://127.0.0.1:*'", needs=(KEYS_ENROL,),
               expect=("fleet-hub: listening on", "1 robots enrolled", "fleet-hub: stopped")),
    # with no hub up the agent keeps controlling and spooling (the uplink retries with backoff)
    UPLINK_AGENT: Budget(replace={"<dir>": "{cartpole_checkpoint}"}, append="max_steps=50", needs=(KEYS_ENROL,),
                         expect=("[agent unit-7] cartpole at 50 Hz",)),
    "fleet-hub publish <dir> fleet_data": Budget(replace={"<dir>": "{cartpole_checkpoint}"},
                                                 expect=("published trunk v",)),
    # on a storage dir as a fleet leaves it (learn_storage); a gentle step and a wide tolerance, so that a few
    # gate episodes let the round publish (tests/fleet/learner/ pins what the gate refuses)
    "fleet-learn storage_dir=fleet_data updates=200 sim_fraction=0.25 gate.episodes=64":
        Budget(replace={"storage_dir=fleet_data": "storage_dir={learn_storage}", "updates=200": "updates=4",
                        "gate.episodes=64": "gate.episodes=8"}, append=LEARN_TINY,
               expect=("[learn] round 1/1 update 4/4", "rebased unit-7", "published trunk v")),
    "torchrun --standalone --nproc_per_node=2 $(which fleet-learn) storage_dir=fleet_data updates=200":
        Budget(replace={"storage_dir=fleet_data": "storage_dir={learn_storage}", "updates=200": "updates=4"},
               append=f"gate.episodes=8 {LEARN_TINY}",
               expect=("2 ranks hold identical weights: True", "published trunk v")),
}


def readme_commands(text: str) -> list[str]:
    """The commands of the ```bash blocks of a markdown text: comments dropped, continuations joined."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands.append(" ".join(line.split()))
    return commands


README_COMMANDS = readme_commands((REPO / "README.md").read_text())


def user_env() -> dict[str, str]:
    """A user's shell with the venv's console scripts on PATH; no display, no MUJOCO_GL, W&B off."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}
    return {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "WANDB_MODE": "disabled"}


def run_shell(command: str, cwd: Path, timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a command line through bash in its own process group; kill the whole group when done or stuck."""
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=user_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # fleet-demo stops the parts it started in their own sessions
        try:
            out, _ = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        out += f"\n[test] stopped after {timeout_s:.0f} s"
    finally:
        try:  # torchrun ranks, the stand-in's physics process, the adapter trainer: nothing outlives the test
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(command, proc.returncode, out, "")


class ReadmeRunner:
    """Runs README commands once each in one working directory, and makes the artefacts they refer to."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.results: dict[str, subprocess.CompletedProcess] = {}
        self.artefacts: dict[str, str] = {"state": str(workdir / "robot-agent")}

    def artefact(self, name: str) -> str:
        """A path a command's placeholder stands for, made on first use."""
        if name not in self.artefacts:
            self.artefacts[name] = getattr(self, f"_make_{name}")()
        return self.artefacts[name]

    def command_line(self, readme_command: str) -> str:
        """The README command as this test runs it (substitutions, budget), or a failure saying what to add."""
        budget = COMMANDS.get(readme_command)
        if budget is None:
            pytest.fail(f"README command has no entry in COMMANDS of {Path(__file__).name}: add one that says "
                        f"how to run it on a short budget:\n    {readme_command}")
        line = readme_command
        for old, new in budget.replace.items():
            assert old in line, f"COMMANDS entry replaces {old!r}, which is not in {readme_command!r}"
            names = re.findall(r"\{(\w+)\}", new)
            line = line.replace(old, new.format(**{n: self.artefact(n) for n in names}))
        line = f"{line} {budget.append}".strip()
        left = re.findall(r"<[a-z_]+>|(?:^|\s)\.\.\.(?:\s|$)", line)
        assert not left, f"placeholder {left} left in {line!r}: substitute it in COMMANDS"
        return line

    def run(self, readme_command: str) -> subprocess.CompletedProcess:
        """Run a README command (once; later calls return the first result), its prerequisites first."""
        if readme_command not in self.results:
            line = self.command_line(readme_command)
            for needed in COMMANDS[readme_command].needs:
                self.assert_ran(needed)
            self.results[readme_command] = run_shell(line, self.workdir, COMMANDS[readme_command].timeout_s)
        return self.results[readme_command]

    def assert_ran(self, readme_command: str) -> subprocess.CompletedProcess:
        """Run a README command and check that it exited 0 and printed what its entry expects."""
        res = self.run(readme_command)
        assert res.returncode == 0, f"`{res.args}` exited {res.returncode}:\n{res.stdout[-4000:]}"
        for text in COMMANDS[readme_command].expect:
            assert text in res.stdout, f"`{res.args}` did not print {text!r}:\n{res.stdout[-4000:]}"
        return res

    def _make_cartpole_checkpoint(self) -> str:
        # what the README's own sweep wrote (its first job: cartpole, TINY budget), not a training of its own
        match = re.search(r"\[train\] checkpoint -> (\S+)", self.assert_ran(MULTIRUN).stdout)
        assert match, "the sweep printed no checkpoint path"
        return match.group(1)

    def _make_arms_checkpoint(self) -> str:
        # what the README's own reach command wrote (it trains arm7 among the three arms)
        match = re.search(r"\[train\] checkpoint -> (\S+)", self.assert_ran(REACH).stdout)
        assert match, "the reach training printed no checkpoint path"
        return match.group(1)

    def _make_learn_storage(self) -> str:
        # a hub storage dir as a fleet leaves it: the README's trunk published, two robots' experience recorded
        # on it (tests/fleet/learner/experience.py) and unit-7's adapter uploaded
        from shared_policy.checkpoint import load_checkpoint
        from tests.fleet.learner.experience import (
            publish_trunk,
            robot_records,
            store_records,
            unit_adapter,
            upload_adapter,
        )

        storage, checkpoint = self.workdir / "learn_data", Path(self.artefact("cartpole_checkpoint"))
        version = publish_trunk(storage, checkpoint)
        policy, _ = load_checkpoint(checkpoint)
        adapters = {"unit-7": unit_adapter(policy, 7)}
        store_records(storage, robot_records(policy, ["unit-7", "unit-8"], adapters, 64, 32, version))
        upload_adapter(storage, "unit-7", adapters["unit-7"], 1, version)
        return str(storage)

    def _make_demo_run(self) -> str:
        # a demo run's record as fleet-demo saves it (tests/report/records.py: realistic units and episodes)
        from tests.report.records import demo_record

        run = self.workdir / "demo_run"
        run.mkdir()
        demo_record().save(run)
        return str(run)

    def _make_venv(self) -> str:
        # The Makefile's install rule is skipped when the venv's stamp is newer than pyproject.toml.
        for name in ("Makefile", "pyproject.toml"):
            shutil.copy(REPO / name, self.workdir / name)
        os.utime(self.workdir / "pyproject.toml", (0, 0))
        venv = self.workdir / "venv"
        (venv / "bin").mkdir(parents=True)
        path = venv / "bin" / "python"
        path.write_text(f'#!/bin/sh\nexec "{BIN / "python"}" "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
        (venv / ".installed").touch()
        return str(venv)


@pytest.fixture(scope="module")
def readme(tmp_path_factory) -> ReadmeRunner:
    return ReadmeRunner(tmp_path_factory.mktemp("readme"))


def test_commands_are_read_from_bash_blocks_with_continuations_joined_and_comments_dropped():
    text = ("```bash\n# setup\nfleet-train a=1 \\\n    b=2   # trains\n\nrobot-agent status x\n```\n"
            "```python\nimport sim\n```\n")
    assert readme_commands(text) == ["fleet-train a=1 b=2", "robot-agent status x"]


def test_a_command_missing_from_the_table_fails_saying_to_add_it(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="no entry in COMMANDS"):
        ReadmeRunner(tmp_path).command_line("fleet-train a-new-command")


def test_readme_has_commands_and_every_table_entry_is_a_readme_command():
    assert len(README_COMMANDS) >= 10, README_COMMANDS
    stale = sorted(set(COMMANDS) - set(README_COMMANDS))
    assert not stale, f"COMMANDS entries for commands no longer in README.md (remove them): {stale}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("command", README_COMMANDS, ids=[f"{i}:{c[:40]}" for i, c in enumerate(README_COMMANDS)])
def test_readme_command_runs_as_written(readme, command):
    readme.assert_ran(command)
