"""A replay table: prioritised sampling follows its priorities, importance weights, eviction by size and age."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fleet.replay.config import ReplayConfig
from fleet.replay.sum_tree import SumTree
from fleet.replay.table import ReplayTable

CHI2_DF5_P001 = 20.515  # the chi-square distribution's 0.999 quantile with 5 degrees of freedom


def _table(priorities, **kw) -> ReplayTable:
    cfg = ReplayConfig(**{"max_items": 16, "alpha": 1.0, "beta": 0.5, "priority_eps": 0.0, "seed": 7, **kw})
    table = ReplayTable(cfg)
    for i, p in enumerate(priorities):
        assert table.insert(f"item{i}", p) == i
    return table


def _draws(table: ReplayTable, n: int, batch: int = 100) -> np.ndarray:
    keys = np.concatenate([table.sample(batch).keys for _ in range(n // batch)])
    return np.bincount(keys, minlength=len(table) + int(table.keys()[0]))[table.keys()]


def _chi2(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_prioritised_sampling_frequencies_follow_priority_to_the_alpha(alpha):
    priorities = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 10.0])
    table = _table(priorities, alpha=alpha)
    counts = _draws(table, 30_000)
    p = priorities ** alpha / (priorities ** alpha).sum()
    assert _chi2(counts, p) < CHI2_DF5_P001
    assert _chi2(counts, np.full(6, 1 / 6)) > 10 * CHI2_DF5_P001  # the test tells these apart from uniform


def test_a_priority_update_changes_what_is_sampled():
    table = _table([1.0, 2.0, 3.0, 4.0, 5.0, 10.0])
    assert table.update_priorities(np.array([0, 5]), np.array([100.0, 0.5])) == 2
    counts = _draws(table, 30_000)
    p = np.array([100.0, 2.0, 3.0, 4.0, 5.0, 0.5])
    assert _chi2(counts, p / p.sum()) < CHI2_DF5_P001


def test_importance_weights_by_hand():
    # priorities [1, 3], alpha 1, beta 0.5, N = 2: P = [0.25, 0.75]
    # w = (N P)^-beta = [0.5^-0.5, 1.5^-0.5] = [1.41421, 0.81650]; the largest possible, (N min P)^-beta = 1.41421
    # normalised: [1, 0.57735]
    table = _table([1.0, 3.0])
    s = table.sample(64)
    assert set(s.keys) == {0, 1}
    np.testing.assert_allclose(s.probabilities, np.where(s.keys == 0, 0.25, 0.75))
    np.testing.assert_allclose(s.weights, np.where(s.keys == 0, 1.0, 0.57735), rtol=1e-5)
    assert s.items == [f"item{k}" for k in s.keys]


def test_uniform_sampling_ignores_priorities_and_weighs_one():
    table = _table([1.0, 2.0, 3.0, 4.0, 5.0, 100.0], prioritised=False)
    counts = _draws(table, 30_000)
    assert _chi2(counts, np.full(6, 1 / 6)) < CHI2_DF5_P001
    s = table.sample(10)
    assert (s.weights == 1).all() and np.allclose(s.probabilities, 1 / 6)


def test_eviction_by_size_drops_the_oldest_and_their_priorities():
    table = _table([50.0, 50.0, 1.0, 1.0, 1.0], max_items=3)
    assert list(table.keys()) == [2, 3, 4] and table.evicted_by_size == 2
    s = table.sample(300)
    assert set(s.keys) == {2, 3, 4} and {table_item for table_item in s.items} == {"item2", "item3", "item4"}
    # the evicted items' large priorities left with them: the three left are drawn about equally
    np.testing.assert_allclose(s.probabilities, 1 / 3)
    assert table.update_priorities(np.array([0, 1, 4]), np.array([9.0, 9.0, 2.0])) == 1  # only key 4 is still in
    np.testing.assert_allclose(table.priorities(np.array([0, 4])), [0.0, 2.0])


def test_eviction_by_age_drops_items_whose_data_is_older_than_the_limit():
    now = time.time()
    table = ReplayTable(ReplayConfig(max_items=10, max_age_s=60.0))
    for i, age in enumerate([600.0, 120.0, 30.0, 1.0]):
        table.insert(f"item{i}", 1.0, item_time=now - age)
    # the insert of each young item already evicted the old ones before it
    assert list(table.keys()) == [2, 3] and table.evicted_by_age == 2
    table.insert("late", 1.0, item_time=now - 3600.0)  # an old chunk read late is evicted at the next check
    assert table.evict_expired() == 0  # not the oldest inserted: it waits behind items 2 and 3
    assert set(table.sample(50).keys) <= {2, 3, 4}


def test_bad_priorities_raise_and_change_nothing():
    table = _table([1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        table.update_priorities(np.array([0, 1]), np.array([5.0, np.nan]))
    np.testing.assert_allclose(table.priorities(np.array([0, 1])), [1.0, 2.0])
    with pytest.raises(ValueError, match="priority"):
        table.insert("x", -1.0)
    assert len(table) == 2


def test_sum_tree_finds_each_slot_by_its_cumulative_range():
    tree = SumTree(5)
    tree.set(np.array([0, 1, 2, 4]), np.array([1.0, 0.0, 2.0, 3.0]))
    assert tree.total == 6.0 and tree.min == 1.0
    # ranges: slot 0 [0, 1), slot 2 [1, 3), slot 4 [3, 6); the empty slots 1 and 3 are never found
    np.testing.assert_array_equal(tree.find(np.array([0.0, 0.999, 1.0, 2.5, 3.0, 5.999999])), [0, 0, 2, 2, 4, 4])
    # a point rounded up to the total itself still lands on a slot that holds something, never an empty one
    tree.set(np.array([4]), np.array([0.0]))
    assert tree.total == 3.0 and tree.find(np.array([3.0]))[0] == 2


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="replay.min_size"):
        ReplayConfig(min_size=0)
    with pytest.raises(ValueError, match="replay.error_buffer"):
        ReplayConfig(samples_per_insert=4.0, error_buffer=2.0)


def test_a_table_whose_priorities_are_all_zero_samples_uniformly_not_nan():
    table = _table([0.0, 0.0, 0.0, 0.0])  # priority_eps 0: no mass at all to draw by
    sample = table.sample(64)
    assert np.isfinite(sample.probabilities).all() and np.isfinite(sample.weights).all()
    assert set(sample.keys.tolist()) <= {0, 1, 2, 3}
