"""The import contracts of .importlinter hold: the layers, and what stats, energy and loop may not import.

`make lint` runs the same contracts with `lint-imports`; this test makes `make test` (and so CI) check them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def _lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _LINT, "--config", str(config), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_are_kept() -> None:
    result = _lint_imports(ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout + result.stderr
    for contract in (
        "The analysis (repro.stats) imports no torch KEPT",
        "The energy package imports no MLflow KEPT",
        "The training loop knows neither MLflow nor CodeCarbon KEPT",
        "No plugin package (meters, data sets) imports the composition root KEPT",
    ):
        assert contract in result.stdout
    assert "0 broken" in result.stdout


def test_a_broken_contract_fails_and_names_the_import_chain(tmp_path: Path) -> None:
    """The checker reads this package: the training loop does import torch."""
    config = tmp_path / ".importlinter"
    config.write_text(
        "[importlinter]\nroot_package = repro\ninclude_external_packages = True\n\n"
        "[importlinter:contract:loop-no-torch]\nname = loop imports no torch\ntype = forbidden\n"
        "source_modules = repro.loop\nforbidden_modules = torch\n"
    )
    result = _lint_imports(config)
    assert result.returncode == 1
    assert "loop imports no torch BROKEN" in result.stdout
    assert "repro.loop -> torch" in result.stdout


def test_the_repo_root_is_computed_in_one_place() -> None:
    from repro.paths import repo_root

    assert (repo_root() / "pyproject.toml").is_file() and (repo_root() / "src" / "repro").is_dir()
    computed = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "src" / "repro").rglob("*.py"))
        if "Path(__file__).resolve().parents[" in path.read_text()
    ]
    assert computed == ["src/repro/paths.py"]
