"""T7: the architecture x environment analyses (ANOVA, ART, Scheirer-Ray-Hare) and their sub-designs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from repro.stats.analyses import StudyResults
from repro.stats.interaction import (
    _type2,
    _type3,
    art_align,
    art_anova,
    complete_subdesigns,
    scheirer_ray_hare,
    two_way_anova,
)
from repro.stats.runs import RunsTable
from repro.stats.tables import interaction_table

# Mangiafico's "Midichlorians" example (rcompanion handbook, chapters on Scheirer-Ray-Hare and ART):
# 4 locations x 2 tribes, 3 observations per cell.
_MIDI = pd.DataFrame(
    {
        "architecture": np.repeat(["Olympia", "Ventura", "Northampton", "Burlington"], 6),
        "environment": ["Jedi", "Sith"] * 12,
        "run": [str(i) for i in range(24)],
        "y": [10, 4, 12, 5, 15, 4, 15, 9, 15, 11, 18, 12, 8, 13, 8, 15, 10, 17, 22, 22, 20, 22, 20, 25],
    }
)


def test_published_data_has_the_two_complete_subdesigns(published: RunsTable, study: StudyResults) -> None:
    designs = complete_subdesigns(published.runs, list(study.environments), list(study.architectures))
    assert designs == [
        (("mobilenet_v2", "nasnet_mobile"), ("Local N", "Local ML", "Cloud")),
        (("mobilenet_v2", "nasnet_mobile", "resnet50", "xception", "vgg16"), ("Local ML", "Cloud")),
    ]
    assert [sub.n for sub in study.interaction] == [176, 291]


def test_t7_on_published_data_finds_the_interaction_and_failed_assumptions(study: StudyResults) -> None:
    for sub in study.interaction:
        assert not sub.assumptions_hold  # J/image is neither normal nor homoscedastic here
        for analysis in (sub.anova, sub.art, sub.srh):
            interaction = analysis[2]
            assert interaction.effect == "architecture:environment"
            assert interaction.pvalue < 0.05
            assert 0 < interaction.partial_eta2 < 1
    markdown = interaction_table(study).to_markdown()
    assert "S1: MobileNet V2, NASNet Mobile × Local N, Local ML, Cloud" in markdown
    assert "S2: all 5 architectures × Local ML, Cloud" in markdown
    assert "assumptions fail" in markdown
    assert "ranked as ARTool ranks" in markdown
    assert "Type II sums of squares (ARTool's default is Type III" in markdown


def test_type2_sums_of_squares_match_statsmodels() -> None:
    rows, residuals = two_way_anova(_MIDI, "y")
    sums, ss_resid, df_resid = _type2(_MIDI["y"].to_numpy(float), _MIDI["architecture"], _MIDI["environment"])
    assert df_resid == 16 and len(residuals) == 24
    for row in rows:
        ss, df = sums[row.effect]
        assert df == row.df
        assert (ss / df) / (ss_resid / df_resid) == pytest.approx(row.statistic, rel=1e-9)


def test_art_alignment_strips_every_other_effect() -> None:
    """Wobbrock et al.'s check: aligned columns sum to 0; an ANOVA of one shows only its own effect."""
    aligned = art_align(_MIDI, "y")
    assert np.allclose(aligned.sum(), 0)
    for effect in aligned.columns:
        sums, _, _ = _type2(aligned[effect].to_numpy(), _MIDI["architecture"], _MIDI["environment"])
        for other, (ss, _) in sums.items():
            if other != effect:
                assert ss == pytest.approx(0, abs=1e-9)
    rows = art_anova(_MIDI, "y")
    assert [r.df for r in rows] == [3, 1, 3] and all(r.df_residual == 16 for r in rows)


def test_art_on_midichlorians_gives_artools_f_values() -> None:
    """The interaction F that ARTool gives here (29.94, as the references audit ran it in R) needs its
    rounding: ranked unrounded, two aligned values that tie in exact arithmetic split, and F is 29.49."""
    rows = {r.effect: r for r in art_anova(_MIDI, "y")}
    assert rows["architecture:environment"].statistic == pytest.approx(29.94, abs=0.005)
    # Balanced design: Type III reads the same F values as Type II.
    for row in art_anova(_MIDI, "y", sums_of_squares="III"):
        assert row.statistic == pytest.approx(rows[row.effect].statistic, rel=1e-9)

    from scipy import stats

    aligned = art_align(_MIDI, "y")["architecture:environment"].to_numpy()
    sums, ss_resid, df_resid = _type2(stats.rankdata(aligned), _MIDI["architecture"], _MIDI["environment"])
    ss, df = sums["architecture:environment"]
    assert (ss / df) / (ss_resid / df_resid) == pytest.approx(29.49, abs=0.005)  # what unrounded ranks give


_HIGGINS = Path(__file__).parent / "data" / "higgins1990_table1.csv"  # see data/README.md


@pytest.mark.parametrize("sums_of_squares", ["II", "III"])
def test_art_matches_artools_published_results_on_higgins_1990_table_1(sums_of_squares: str) -> None:
    """ARTool's published `anova(art(Response ~ Row * Column))` (tests/stats/data/README.md)."""
    data = pd.read_csv(_HIGGINS).rename(columns={"Row": "architecture", "Column": "environment"})
    rows = {r.effect: r for r in art_anova(data, "Response", sums_of_squares)}
    published = {"architecture": 29.9925, "environment": 77.8668, "architecture:environment": 0.6417}
    for effect, f in published.items():
        assert round(rows[effect].statistic, 4) == f, effect
        assert rows[effect].df_residual == 27
    assert [rows[e].df for e in published] == [2, 2, 4]
    assert round(rows["architecture:environment"].pvalue, 4) == 0.6374
    assert rows["architecture"].pvalue < 1e-4 and rows["environment"].pvalue < 1e-4


def test_type3_sums_of_squares_match_statsmodels_on_an_unbalanced_design() -> None:
    """Type III with sum-to-zero contrasts, as car::Anova(type=3) and statsmodels' anova_lm(typ=3) read it."""
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    unbalanced = _MIDI.drop(index=[0, 7, 8]).reset_index(drop=True)
    data = pd.DataFrame(
        {"y": unbalanced["y"], "a": unbalanced["architecture"], "b": unbalanced["environment"]}
    )
    table = anova_lm(smf.ols("y ~ C(a, Sum) * C(b, Sum)", data=data).fit(), typ=3)
    sums, ss_resid, df_resid = _type3(unbalanced["y"].to_numpy(float), data["a"], data["b"])
    assert ss_resid == pytest.approx(table.loc["Residual", "sum_sq"], rel=1e-9)
    for effect, term in (
        ("architecture", "C(a, Sum)"),
        ("environment", "C(b, Sum)"),
        ("architecture:environment", "C(a, Sum):C(b, Sum)"),
    ):
        assert sums[effect][0] == pytest.approx(table.loc[term, "sum_sq"], rel=1e-9)
    type2, _, _ = _type2(unbalanced["y"].to_numpy(float), data["a"], data["b"])
    # Unbalanced: Type II and III differ, so the test above is not Type II in disguise.
    assert type2["architecture"][0] != pytest.approx(sums["architecture"][0], rel=1e-6)


def test_scheirer_ray_hare_is_kruskal_wallis_for_a_main_effect_in_a_balanced_design() -> None:
    from scipy import stats

    rows = {r.effect: r for r in scheirer_ray_hare(_MIDI, "y")}
    groups = [g["y"].to_numpy() for _, g in _MIDI.groupby("architecture")]
    kruskal = stats.kruskal(*groups)
    assert rows["architecture"].statistic == pytest.approx(kruskal.statistic, rel=1e-9)
    assert rows["architecture"].pvalue == pytest.approx(kruskal.pvalue, rel=1e-9)


def test_runs_without_a_complete_subdesign_say_so_in_t7(study: StudyResults) -> None:
    from dataclasses import replace

    table = interaction_table(replace(study, interaction=()))
    assert "No complete sub-design" in table.to_markdown()
    assert "none" in table.to_csv()
