"""``fleet-eval report RUN_DIR`` as a user runs it (a real process): the report and its offline W&B run, exit 2
on a bad run directory, and every other ``fleet-eval`` command still reaching the Hydra evaluation app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fleet.report.build import MARKDOWN_FILE
from tests.report.pages import read_page
from tests.report.records import demo_record

ROOT = Path(__file__).resolve().parents[2]


def fleet_eval(*args: str, cwd: Path, wandb_mode: str = "disabled") -> subprocess.CompletedProcess:
    """The console script's entry point (fleet.report.cli:eval_main) in a fresh interpreter."""
    env = {**os.environ, "WANDB_MODE": wandb_mode, "PYTHONPATH": str(ROOT)}
    env.pop("WANDB_DIR", None)
    return subprocess.run([sys.executable, "-m", "fleet.report.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=150, stdin=subprocess.DEVNULL)


def test_the_console_script_is_the_dispatcher_and_matplotlib_a_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["fleet-eval"] == "fleet.report.cli:eval_main"
    assert any(d.startswith("matplotlib") for d in project["dependencies"])


@pytest.mark.timeout(180)
def test_report_command_writes_the_report_and_logs_every_table_and_figure_to_an_offline_wandb_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    demo_record(seed=21).save(run_dir)
    res = fleet_eval("report", str(run_dir), "--out", str(tmp_path / "out"), cwd=tmp_path, wandb_mode="offline")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"report: {tmp_path / 'out' / 'index.html'}" in res.stdout
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert f"report W&B run: {runs[0]}" in (tmp_path / "out" / MARKDOWN_FILE).read_text()
    page = read_page(tmp_path / "out")
    media = runs[0] / "files" / "media"
    for name, rows in page.tables.items():
        logged = [json.loads(p.read_text()) for p in (media / "table" / "tables").glob(f"{name}_*.table.json")]
        assert len(logged) == 1, name
        assert [logged[0]["columns"], *logged[0]["data"]] == rows
    assert len(list((media / "images" / "figures").rglob("*.png"))) == len(page.images)


@pytest.mark.timeout(120)
def test_a_bad_run_dir_exits_2_naming_it_and_a_wandb_run_is_not_started(tmp_path):
    res = fleet_eval("report", str(tmp_path), cwd=tmp_path, wandb_mode="offline")
    assert res.returncode == 2
    assert f"fleet-eval report: {tmp_path}: no results.json" in res.stderr
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "report").exists()
    res = fleet_eval("report", cwd=tmp_path)
    assert res.returncode == 2 and "run_dir" in res.stderr  # argparse: the argument is required


@pytest.mark.timeout(120)
def test_other_arguments_still_reach_the_hydra_evaluation_app(tmp_path):
    res = fleet_eval("episodes=some", cwd=tmp_path)
    assert res.returncode != 0
    assert "full_key: episodes" in res.stderr  # Hydra's own error for the eval config


@pytest.mark.timeout(180)
def test_a_report_built_inside_a_process_with_an_open_wandb_run_leaves_that_run_open(tmp_path):
    demo_record(seed=22).save(tmp_path)
    code = ("import wandb; from pathlib import Path; from fleet.report import build_report; "
            f"run = wandb.init(project='demo', dir={str(tmp_path / 'own')!r}); "
            f"build_report(Path({str(tmp_path)!r})); "
            "assert not run._is_finished, 'the caller run was ended'; run.log({'after_report': 1.0}); run.finish()")
    (tmp_path / "own").mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    env.pop("WANDB_DIR", None)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=150, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1  # the report's, beside the caller's own
    assert len(list((tmp_path / "own" / "wandb").glob("offline-run-*"))) == 1
