"""The adaptation benchmark's evaluations pair episode by episode: the same goals whichever policy drives."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts import their neighbours
from adaptation import evaluate, learned_adapter_alone  # noqa: E402

from tests.robot_agent.conftest import pretrain  # noqa: E402


@pytest.mark.timeout(300)
def test_the_adapted_evaluation_draws_the_zero_shot_evaluations_goals_after_a_run_used_up_episode_numbers(tmp_path):
    # reach draws a goal per episode (by the episode's number); with no adapter kept the adapted policy is the
    # trunk itself, so episode by episode the two evaluations must return exactly the same only if paired
    checkpoint = pretrain(tmp_path / "arm", "arm2_planar", "reach", iterations=1)
    learned = tmp_path / "learned"
    evaluate("arm2_planar", "reach", checkpoint, 7, {}, learned, adapter=True, episodes=3)  # numbers 0.. used
    zero_shot = evaluate("arm2_planar", "reach", checkpoint, 7, {}, tmp_path / "zero_shot", adapter=False, episodes=3)
    alone = learned_adapter_alone(learned, tmp_path / "adapted_eval")
    adapted = evaluate("arm2_planar", "reach", checkpoint, 7, {}, alone, adapter=True, episodes=3)
    np.testing.assert_array_equal(adapted, zero_shot)
    reused = evaluate("arm2_planar", "reach", checkpoint, 7, {}, learned, adapter=True, episodes=3)
    assert not np.array_equal(reused, zero_shot)  # the learning run's own directory draws other goals


def test_the_kept_adapter_and_nothing_else_is_copied_into_the_fresh_directory(tmp_path):
    from robot_agent.agent import ADAPTER_FILE

    learned = tmp_path / "learned"
    (learned / "spool").mkdir(parents=True)
    (learned / ADAPTER_FILE).write_bytes(b"the kept adapter")
    alone = learned_adapter_alone(learned, tmp_path / "alone")
    assert (alone / ADAPTER_FILE).read_bytes() == b"the kept adapter"
    assert [p.name for p in alone.iterdir()] == [ADAPTER_FILE]  # no spool: its episodes number from 0
