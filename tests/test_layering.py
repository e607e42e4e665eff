"""The packages' layering, read from the source: imports point one way, flows -> infra -> tiling -> ssdiff_model.

`ssdiff_model` knows nothing of Ray, Prefect or Zarr; `tiling` does not import `infra` or `flows`; `infra` does not
import `flows`. Every import counts, at module level or inside a function: a lazy import is still a dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT

# package -> what it must never import (top-level module names)
FORBIDDEN = {
    "ssdiff_model": {"ray", "prefect", "zarr", "tiling", "infra", "flows", "fsspec", "s3fs"},
    "tiling": {"ray", "prefect", "infra", "flows"},
    "infra": {"flows", "prefect"},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import in the file at `path`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def violations(package: str, forbidden: set[str]) -> list[str]:
    return [f"{path.relative_to(PROJECT_ROOT)}:{line} imports {module}"
            for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
            for line, module in imported_modules(path) if module in forbidden]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_against_the_layers(package):
    assert violations(package, FORBIDDEN[package]) == []


def test_the_check_sees_a_violation(tmp_path):
    """The scan is not vacuous: a lazy import of Ray inside a function is found."""
    module = tmp_path / "m.py"
    module.write_text("import numpy\n\ndef f():\n    from ray.util import ActorPool\n    import zarr.codecs\n")
    assert imported_modules(module) == [(1, "numpy"), (4, "ray"), (5, "zarr")]
