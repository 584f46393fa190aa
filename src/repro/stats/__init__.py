"""Significance tests, the study's analyses, and its tables and figures.

- `repro.stats.significance`: the tests (Shapiro, Levene, Welch's ANOVA, Games-Howell, Kruskal-Wallis
  with eta^2_H, Dunn-Holm, Cliff's delta, Spearman), each returning a typed result;
- `repro.stats.tradeoff`: the Pareto front and the improvement matrix;
- `repro.stats.runs`: the tidy runs table, from the published data or from MLflow;
- `repro.stats.analyses`: RQ1, RQ2, the correlations, the trade-off and the improvements;
- `repro.stats.tables` and `repro.stats.figures`: what `python -m repro.paper` writes;
- `repro.stats.study`: the pipeline and entry point that `repro.paper`, `repro.report` and
  `repro.stats.replication` share.

The analyses compare the factors that `study.factors` names among those `repro.factors` declares
(default: the study's architecture and environment).
"""

from repro.stats.analyses import StudyResults, analyse
from repro.stats.runs import RunsTable, apply_outlier_policy, load_mlflow, load_published
from repro.stats.significance import (
    cliff_magnitude,
    cliffs_delta,
    cliffs_deltas,
    dunn_holm,
    eta_squared_h,
    games_howell,
    kruskal,
    levene,
    shapiro,
    spearman,
    welch_anova,
)
from repro.stats.tradeoff import improvement_matrix, pareto_front

__all__ = [
    "RunsTable",
    "StudyResults",
    "analyse",
    "apply_outlier_policy",
    "cliff_magnitude",
    "cliffs_delta",
    "cliffs_deltas",
    "dunn_holm",
    "eta_squared_h",
    "games_howell",
    "improvement_matrix",
    "kruskal",
    "levene",
    "load_mlflow",
    "load_published",
    "pareto_front",
    "shapiro",
    "spearman",
    "welch_anova",
]
