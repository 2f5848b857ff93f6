"""The import contracts in pyproject.toml (run by ``make lint``) hold on the package and fail on a wrong-way import.

Each failing case copies the package, adds one import a newcomer might write, and runs ``lint-imports`` on the copy.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlops_platform

PACKAGE = Path(mlops_platform.__file__).parent
PYPROJECT = PACKAGE.parent / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
                          check=False, cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    shutil.copytree(PACKAGE, tmp_path / "mlops_platform", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    return tmp_path


def broken(result: subprocess.CompletedProcess[str], contract: str) -> bool:
    """Whether the contract whose name starts with ``contract`` is reported BROKEN (names wrap across lines)."""
    text = " ".join(result.stdout.split())
    return re.search(re.escape(contract) + r"(?:(?! KEPT).)*? BROKEN", text) is not None


def add_import(root: Path, module: str, statement: str) -> None:
    path = root / Path(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text() + f"\n{statement}\n")


def test_the_package_keeps_every_contract():
    result = lint_imports(PACKAGE.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "statement", "contract", "reported", "still_kept"), [
    pytest.param("mlops_platform.transforms.features", "import mlops_platform.resources.warehouse  # noqa",
                 "Imports go down", "mlops_platform.transforms.features -> mlops_platform.resources.warehouse", None,
                 id="a plain library importing a resource breaks the layers"),
    pytest.param("mlops_platform.serving.payload", "import dagster  # noqa", "Plain libraries know nothing of Dagster",
                 "mlops_platform.serving.payload -> dagster", None,
                 id="the serving process importing dagster breaks a contract"),
    # storage.tables is imported by storage.delta; the reverse import closes a cycle inside one layer.
    pytest.param("mlops_platform.storage.tables", "import mlops_platform.storage.delta  # noqa", "No import cycles",
                 None, "Imports go down", id="two modules importing each other break the acyclic contract"),
])
def test_a_wrong_way_import_breaks_its_contract(copy: Path, module: str, statement: str, contract: str,
                                                 reported: str | None, still_kept: str | None):
    add_import(copy, module, statement)
    result = lint_imports(copy)
    assert result.returncode == 1
    assert broken(result, contract)
    if reported is not None:
        assert reported in result.stdout
    if still_kept is not None:
        assert not broken(result, still_kept)


def layered_modules(pyproject: str) -> set[str]:
    import tomllib

    contracts = tomllib.loads(pyproject)["tool"]["importlinter"]["contracts"]
    (layers,) = [contract["layers"] for contract in contracts if contract["type"] == "layers"]
    return {module.strip().removeprefix("mlops_platform.") for layer in layers for module in layer.split(":")}


def test_every_module_of_the_package_has_a_layer():
    """A new top-level module outside the layers would escape the layering contract without a word."""
    import pkgutil

    modules = {module.name for module in pkgutil.iter_modules([str(PACKAGE)]) if module.name != "__main__"}
    assert modules - layered_modules(PYPROJECT.read_text()) == set()
    # The check can fail: without its line, the guard is unlayered.
    without_guard = PYPROJECT.read_text().replace(" : mlops_platform.guard", "")
    assert "guard" in modules - layered_modules(without_guard)
