"""The MLflow stores that committed results are computed from ship with them and recompute them.

Each test works on a copy of the files git tracks (what a clone has: nothing ignored, nothing built) and
runs, from that copy's root, the commands the repository documents: the replication README's recompute
commands and `make estimation-tables`. What they write must equal what is committed.
"""

from __future__ import annotations

import filecmp
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support import REPO_ROOT

REPLICATION = Path("paper/replication/cpu")
STORE = REPLICATION / "mlflow.db"


def _tracked(*paths: str) -> list[str]:
    """The files under `paths` that git tracks in this checkout; skips when it is not a git checkout."""
    if shutil.which("git") is None or not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: which files a clone has is unknown")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", *paths], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return [name for name in listed.stdout.split("\0") if name]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tracked files of `paper/`, the README and the Makefile, as a fresh clone has them."""
    root = tmp_path_factory.mktemp("clone")
    for name in _tracked("paper", "README.md", "Makefile"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, root / name)
    return root


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{shlex.join(command)}\n{result.stderr[-3000:]}"
    return result


def _python(command: str) -> list[str]:
    """A documented `python -m ...` command line, run with this interpreter."""
    words = shlex.split(command)
    assert words[0] in ("python", "$(BIN)/python"), command
    return [sys.executable, *words[1:]]


def _documented_commands(readme: Path, store: Path) -> list[str]:
    """The `python ...` lines of a README's bash blocks (continuations joined) that read `store`."""
    blocks = re.findall(r"```bash\n(.*?)```", readme.read_text(), flags=re.DOTALL)
    return [
        line
        for block in blocks
        for line in block.replace("\\\n", " ").splitlines()
        if line.startswith("python ") and f"sqlite:///{store}" in line
    ]


def test_the_replication_store_is_tracked() -> None:
    assert _tracked(str(STORE)) == [str(STORE)], (
        f"{STORE} is not tracked by git: a clone could not recompute the replication's numbers"
    )


@pytest.mark.slow
def test_the_replication_readme_commands_recompute_its_tables(clone: Path, tmp_path: Path) -> None:
    commands = _documented_commands(clone / REPLICATION / "README.md", STORE)
    assert len(commands) == 2, commands  # repro.paper, then repro.stats.replication
    for command in commands:
        _run(_python(command.replace("/tmp/", f"{tmp_path}/")), cwd=clone)
    committed = clone / REPLICATION / "tables"
    names = sorted(path.name for path in committed.iterdir())
    assert names and sorted(path.name for path in (tmp_path / "t").iterdir()) == names
    _, differ, missing = filecmp.cmpfiles(committed, tmp_path / "t", names, shallow=False)
    assert not differ and not missing, f"recomputed tables differ from the committed ones: {differ + missing}"
    assert "RQ1" in (tmp_path / "comparison.md").read_text()


def test_make_estimation_tables_reads_the_committed_store_and_recomputes_its_step_table(
    clone: Path, tmp_path: Path
) -> None:
    """`make estimation-tables` writes (a)-(e) from the published data and (d) from the committed store.

    (a)-(c) and (e) refit the estimators on the published runs (minutes); only (d) reads the store, so
    the test runs (d)'s code path, with the Makefile's own store and experiment, from the clone's root.
    """
    makefile = (clone / "Makefile").read_text()
    recipe = re.search(r"^estimation-tables:.*\n\t(.*)$", makefile, flags=re.MULTILINE)
    assert recipe is not None
    words = dict(word.split("=", 1) for word in shlex.split(recipe.group(1)) if word.startswith("estimate."))
    uri, experiment = words["estimate.tracking_uri"], words["estimate.experiment"]
    assert uri == f"sqlite:///{STORE}"
    script = (
        "import sys; from pathlib import Path\n"
        "from repro.estimate.validate import step_runs_from_mlflow, step_table\n"
        "step_table(*step_runs_from_mlflow(sys.argv[1], sys.argv[2])).write(Path(sys.argv[3]))\n"
    )
    _run([sys.executable, "-c", script, uri, experiment, str(tmp_path)], cwd=clone)
    committed = clone / "paper" / "estimation"
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["d_step.csv", "d_step.md", "d_step.tex"]
    _, differ, missing = filecmp.cmpfiles(committed, tmp_path, names, shallow=False)
    assert not differ and not missing, f"recomputed (d) differs from paper/estimation: {differ + missing}"
    assert "no runs" not in (tmp_path / "d_step.md").read_text()  # it read the store's projection errors


SETTINGS = Path("paper/settings/cpu")


def test_the_settings_store_is_tracked() -> None:
    store = SETTINGS / "mlflow.db"
    assert _tracked(str(store)) == [str(store)], f"{store} is not tracked: its tables could not be recomputed"


@pytest.mark.slow
def test_the_settings_readme_commands_recompute_its_tables(clone: Path, tmp_path: Path) -> None:
    """Each `repro.paper` command of paper/settings/cpu/README.md rewrites one folder of its `tables/`."""
    commands = _documented_commands(clone / SETTINGS / "README.md", SETTINGS / "mlflow.db")
    committed = clone / SETTINGS / "tables"
    studies = sorted(path.name for path in committed.iterdir())
    assert len(commands) == len(studies) == 3, (commands, studies)
    for command in commands:
        _run(_python(command.replace("/tmp/", f"{tmp_path}/")), cwd=clone)
    for study in studies:
        names = sorted(path.name for path in (committed / study).iterdir())
        written = tmp_path / "settings" / study
        assert names and sorted(path.name for path in written.iterdir()) == names, study
        _, differ, missing = filecmp.cmpfiles(committed / study, written, names, shallow=False)
        assert not differ and not missing, f"{study}: recomputed tables differ: {differ + missing}"
