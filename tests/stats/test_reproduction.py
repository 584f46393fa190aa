"""The published data give the study's numbers: the headline and a handful of the statistics."""

from __future__ import annotations

import pytest

from repro.stats.analyses import StudyResults
from repro.stats.runs import RunsTable


def _comparison(comparisons, metric):
    return next(c for c in comparisons if c.metric == metric)


def test_published_runs_after_exclusions(published: RunsTable) -> None:
    assert len(published.runs) == 351
    assert len(published.excluded) == 18
    assert published.runs.groupby("environment").size().to_dict() == {
        "Cloud": 140,
        "Local ML": 151,
        "Local N": 60,
    }


def test_headline_reduction(study: StudyResults) -> None:
    largest = study.improvements[0]
    assert largest.kind == "largest"
    assert (largest.from_pair, largest.to_pair) == (("vgg16", "Local ML"), ("mobilenet_v2", "Local ML"))
    assert round(largest.reduction, 5) == 0.81386
    assert f"{100 * largest.reduction:.2f}" == "81.39"  # the abstract truncates it to 81.38


def test_subsets(study: StudyResults) -> None:
    rq1 = _comparison(study.rq1, "energy_j_per_image")
    assert (rq1.within, rq1.groups) == (
        "Cloud",
        ("mobilenet_v2", "nasnet_mobile", "resnet50", "xception", "vgg16"),
    )
    assert rq1.kruskal.n_per_group == {
        "mobilenet_v2": 30,
        "nasnet_mobile": 26,
        "resnet50": 25,
        "xception": 30,
        "vgg16": 29,
    }
    rq2 = _comparison(study.rq2, "energy_j_per_image")
    assert (rq2.within, rq2.groups) == ("mobilenet_v2", ("Local N", "Local ML", "Cloud"))
    assert rq2.kruskal.n == 90


@pytest.mark.parametrize(
    ("question", "metric", "h", "p", "eta2"),
    [
        ("rq1", "energy_j_per_image", 127.0484414, 1.665345e-26, 0.9114699),
        ("rq1", "gpu_usage_pct", 133.3541033, 7.463900e-28, 0.9581785),
        ("rq1", "f1", 108.2929969, 1.682645e-22, 0.7725407),
        ("rq2", "energy_j_per_image", 64.2857143, 1.097829e-14, 0.7159278),
        ("rq2", "gpu_usage_pct", 79.1208791, 6.593551e-18, 0.8864469),
    ],
)
def test_kruskal_wallis(
    study: StudyResults, question: str, metric: str, h: float, p: float, eta2: float
) -> None:
    kw = _comparison(getattr(study, question), metric).kruskal
    assert kw.statistic == pytest.approx(h, rel=1e-8)
    assert kw.pvalue == pytest.approx(p, rel=1e-6)
    assert kw.effect_size == pytest.approx(eta2, rel=1e-6)


def test_dunn_and_cliff_pairs(study: StudyResults) -> None:
    pairs = {(p.a, p.b): p for p in _comparison(study.rq1, "energy_j_per_image").pairs}
    assert pairs["mobilenet_v2", "resnet50"].dunn_holm_p == pytest.approx(0.02432196, rel=1e-6)
    assert pairs["nasnet_mobile", "xception"].dunn_holm_p == pytest.approx(0.5366197, rel=1e-6)
    assert pairs["nasnet_mobile", "xception"].cliffs_delta == pytest.approx(-0.2384615, abs=1e-7)
    assert pairs["nasnet_mobile", "xception"].magnitude == "small"
    assert pairs["nasnet_mobile", "resnet50"].cliffs_delta == pytest.approx(0.9969231, abs=1e-7)
    assert pairs["mobilenet_v2", "vgg16"].cliffs_delta == -1.0


def test_spearman(study: StudyResults) -> None:
    found = {(c.x, c.y, c.subset): c.result for c in study.correlations}
    assert found["energy_j_per_image", "f1", "Cloud"].rho == pytest.approx(0.8546213, rel=1e-6)
    assert found["energy_j_per_image", "gflops", "Local ML"].rho == pytest.approx(0.9682080, rel=1e-6)
    assert ("energy_j_per_image", "gflops", "Local N") not in found  # two architectures only
    assert found["energy_j_per_image", "f1", "Cloud"].alternative == "greater"
