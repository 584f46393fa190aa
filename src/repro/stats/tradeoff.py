"""The trade-off and the improvements: the Pareto front of (cost, benefit) and reductions between groups."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def pareto_front(cost: Sequence[float] | np.ndarray, benefit: Sequence[float] | np.ndarray) -> np.ndarray:
    """Indices of the points that no other point dominates, by increasing cost.

    Lower cost and higher benefit are better. A point is dominated when another is at least as good
    on both and better on one; identical points do not dominate each other, so all of them stay.

    Args:
        cost: one value per point (e.g. J/image).
        benefit: one value per point (e.g. F1).

    Returns:
        Integer indices into the inputs, sorted by cost (then by benefit, descending).
    """
    c, b = np.asarray(cost, dtype=float), np.asarray(benefit, dtype=float)
    if c.shape != b.shape:
        raise ValueError(f"cost and benefit differ in length: {c.shape} vs {b.shape}")
    order = np.lexsort((-b, c))  # by cost, then best benefit first
    front: list[int] = []
    best = -np.inf
    for i in order:
        if b[i] > best:
            front.append(int(i))
            best = b[i]
        elif front and c[i] == c[front[-1]] and b[i] == b[front[-1]]:
            front.append(int(i))  # a duplicate of a point on the front
    return np.asarray(front, dtype=int)


def improvement_matrix(medians: pd.Series) -> pd.DataFrame:
    """Relative reduction from every group A (rows) to every group B (columns): (m_A - m_B) / m_A.

    Args:
        medians: the median cost of each group, indexed by group (any hashable, e.g. a tuple).

    Returns:
        A square frame in the order of `medians`; positive where B costs less than A.
    """
    m = medians.to_numpy(dtype=float)
    return pd.DataFrame((m[:, None] - m[None, :]) / m[:, None], index=medians.index, columns=medians.index)
