"""The Pareto front against the brute-force definition, and the improvement matrix by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from repro.stats.tradeoff import improvement_matrix, pareto_front


def _brute_front(cost: np.ndarray, benefit: np.ndarray) -> set[int]:
    front = set()
    for i in range(len(cost)):
        dominated = any(
            cost[j] <= cost[i] and benefit[j] >= benefit[i] and (cost[j] < cost[i] or benefit[j] > benefit[i])
            for j in range(len(cost))
        )
        if not dominated:
            front.add(i)
    return front


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cost = rng.integers(0, 12, 60).astype(float)  # coarse values: ties in cost, benefit and both
    benefit = rng.integers(0, 12, 60).astype(float)
    found = pareto_front(cost, benefit)
    assert set(found.tolist()) == _brute_front(cost, benefit)
    assert np.all(np.diff(cost[found]) >= 0)


def test_pareto_front_small_example() -> None:
    # (1, 0.5) and (2, 0.9) are the front; (3, 0.9) is dominated by (2, 0.9), (2, 0.4) by (1, 0.5).
    assert pareto_front([3, 1, 2, 2], [0.9, 0.5, 0.9, 0.4]).tolist() == [1, 2]
    assert pareto_front([], []).tolist() == []


def test_improvement_matrix_by_hand() -> None:
    medians = pd.Series([4.0, 1.0, 2.0], index=["a", "b", "c"])
    matrix = improvement_matrix(medians)
    assert matrix.loc["a", "b"] == pytest.approx(0.75)  # (4 - 1) / 4
    assert matrix.loc["c", "b"] == pytest.approx(0.5)
    assert matrix.loc["b", "a"] == pytest.approx(-3.0)
    assert np.allclose(np.diag(matrix), 0)
