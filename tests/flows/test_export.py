"""`ssdiff export --cog`: a finished mosaic out as a Cloud Optimized GeoTIFF that GDAL tools accept.

The mosaic is real: a 128 x 128 crop of the Landsat-8 scene with a nodata corner (both files declare nodata 0
there), ingested, and sharpened by the tile runner the Ray actors run (in this process: an actor pool costs
seconds to start). Each COG is checked with rio-cogeo's validator (GDAL's COG rules: tiled, overviews after the
full-resolution image, IFDs first) and read back with rasterio.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from conftest import BAND_NAMES, MS_BANDS, blank_top_left, ingest_args, run_cli, store_state, with_nodata, write_crop
from rio_cogeo.cogeo import cog_validate

from flows.cli import EXIT_BAD_INPUT, main
from tiling import open_mosaic

SIZE = 128
SETTINGS = {"tile_size": 64, "halo": 16, "seed": 0, "steps": 2}   # cores of 32 pixels: 4 x 4 tiles
BLOCK = 64       # below the mosaic's size, so the COG has an overview


@pytest.fixture(scope="module")
def mosaic(landsat_scene, checkpoint, tmp_path_factory) -> Path:
    from ssdiff_model.inference.pansharpener import Pansharpener
    from tiling import create_mosaic_store, missing_tiles, run_tiles

    folder = tmp_path_factory.mktemp("export")
    pan = with_nodata(write_crop([landsat_scene["B8"]], folder / "pan.tif", 400, 400, SIZE,
                                       edit=blank_top_left(40)), 0)
    ms = with_nodata(write_crop([landsat_scene[b] for b in MS_BANDS], folder / "ms.tif", 200, 200, SIZE // 2,
                                      edit=blank_top_left(20)), 0)
    scene, store = folder / "scene.zarr", folder / "mosaic.zarr"
    run_cli(ingest_args({"pan": pan, "ms": ms}, scene))
    pansharpener = Pansharpener.from_checkpoint(checkpoint, device="cpu")
    grid = create_mosaic_store(store, scene, pansharpener, **SETTINGS)
    run_tiles(scene, store, pansharpener, list(grid.tiles()), batch_size=4, seed=0, steps=2)
    assert not missing_tiles(store)
    return store


def _export(mosaic: Path, out: Path, *extra: str) -> dict:
    return run_cli(["export", str(mosaic), "--cog", str(out), "--blocksize", str(BLOCK), *extra])


def _no_partial_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if "partial" in p.name]


def _the_error(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return error


def test_export_writes_a_valid_cog_with_the_mosaics_georeference_values_and_provenance(mosaic, tmp_path):
    out = tmp_path / "mosaic.tif"
    summary = _export(mosaic, out)
    assert summary["cog"] == str(out) and summary["overviews"] == [2]
    valid, errors, warnings = cog_validate(out, quiet=True)
    assert valid and not errors, errors
    assert not warnings, warnings

    hrms = xr.open_zarr(mosaic, decode_coords="all")["hrms"]
    attrs = open_mosaic(mosaic).attrs
    with rasterio.open(out) as cog:
        assert cog.driver == "GTiff" and cog.count == 4 and cog.dtypes == ("float32",) * 4
        assert cog.crs == hrms.rio.crs and cog.crs.to_epsg() == 32616
        assert cog.transform == hrms.rio.transform()
        assert np.isnan(cog.nodata)
        assert cog.descriptions == BAND_NAMES
        assert cog.block_shapes == [(BLOCK, BLOCK)] * 4
        assert cog.compression.value == "DEFLATE"
        assert cog.overviews(1) == [2]
        values = cog.read()
        tags = cog.tags()
        overview = cog.read(1, out_shape=(SIZE // 2, SIZE // 2))   # served from the overview
    expected = hrms.values
    assert np.isnan(expected[:, :40, :40]).all() and np.isfinite(expected[:, 40:, 40:]).all()
    np.testing.assert_array_equal(values, expected)              # NaN where the mosaic has nodata
    # Overview pixels average the valid pixels below them: the nodata corner stays nodata, the rest is finite.
    assert np.isnan(overview[:20, :20]).all() and np.isfinite(overview[20:, 20:]).all()
    assert tags["layout"] == "ssdiff-mosaic/1" and tags["checkpoint_hash"] == attrs["checkpoint_hash"]
    assert json.loads(tags["model_config"]) == attrs["model_config"]
    assert json.loads(tags["scene_sources"]) == attrs["scene_sources"]
    assert json.loads(tags["steps"]) == 2 and tags["mosaic_store"] == str(mosaic)
    assert _no_partial_files(tmp_path)


def test_a_declared_nodata_value_replaces_nan(mosaic, tmp_path):
    out = tmp_path / "nodata.tif"
    assert _export(mosaic, out, "--nodata", "-9999")["nodata"] == -9999
    assert cog_validate(out, quiet=True)[0]
    expected = xr.open_zarr(mosaic)["hrms"].values
    with rasterio.open(out) as cog:
        assert cog.nodata == -9999
        values = cog.read()
        masked = cog.read(masked=True)
    np.testing.assert_array_equal(values, np.where(np.isnan(expected), np.float32(-9999), expected))
    np.testing.assert_array_equal(masked.mask, np.isnan(expected))


def test_an_existing_file_is_kept_unless_overwrite(mosaic, tmp_path, capsys):
    out = tmp_path / "taken.tif"
    out.write_bytes(b"someone else's file")
    before = store_state(tmp_path)
    assert main(["export", str(mosaic), "--cog", str(out)]) == EXIT_BAD_INPUT
    error = _the_error(capsys)
    assert str(out) in error and "--overwrite" in error, error
    assert store_state(tmp_path) == before

    _export(mosaic, out, "--overwrite")
    assert cog_validate(out, quiet=True)[0]
    assert _no_partial_files(tmp_path)


def test_a_nodata_value_the_data_holds_is_refused_and_leaves_no_file(mosaic, tmp_path, capsys):
    taken = float(np.nanmax(xr.open_zarr(mosaic)["hrms"].values))   # a real pixel value: it would read as nodata
    out = tmp_path / "clash.tif"
    assert main(["export", str(mosaic), "--cog", str(out), "--nodata", repr(taken)]) == EXIT_BAD_INPUT
    assert "is a valid value of the mosaic" in _the_error(capsys)
    assert list(tmp_path.iterdir()) == [], "the file was being written: nothing of it may be left"


def test_only_a_finished_mosaic_is_exported(mosaic, checkpoint, tmp_path, capsys):
    from ssdiff_model.inference.pansharpener import Pansharpener
    from tiling import create_mosaic_store

    unfinished = tmp_path / "unfinished.zarr"
    scene = xr.open_zarr(mosaic).attrs["scene_store"]
    create_mosaic_store(unfinished, scene, Pansharpener.from_checkpoint(checkpoint, device="cpu"), **SETTINGS)
    before = store_state(unfinished)
    cases = {unfinished: "16 of 16 tiles missing", Path(scene): "not a ssdiff-mosaic/1 store",
             tmp_path / "nothing.zarr": "no Zarr store there"}
    for store, problem in cases.items():
        out = tmp_path / "out.tif"
        assert main(["export", str(store), "--cog", str(out)]) == EXIT_BAD_INPUT
        error = _the_error(capsys)
        assert error.startswith(f"ssdiff export: error: {store}: ") and problem in error, error
        assert not out.exists()
    assert store_state(unfinished) == before
    assert _no_partial_files(tmp_path)


# ---- the mosaic itself, portable: CF metadata, and netCDF as it is --------------------------------------------------

def test_the_mosaic_store_is_cf_and_writes_to_netcdf_as_it_is(mosaic, tmp_path):
    from tiling.cf import decode_attrs

    out = tmp_path / "mosaic.nc"
    xr.open_zarr(mosaic).to_netcdf(out)          # what a user does; nested provenance used to stop it
    with xr.open_dataset(out, decode_coords="all") as back:
        for name, axis in (("x", "X"), ("y", "Y")):
            assert back[name].attrs["standard_name"] == f"projection_{name}_coordinate"
            assert back[name].attrs["axis"] == axis and back[name].attrs["units"] == "metre"
        assert back["hrms"].attrs["units"] == "1" and "pansharpened" in back["hrms"].attrs["long_name"]
        assert back["done"].attrs["flag_meanings"] == "missing sharpened nodata"
        assert back.attrs["Conventions"] == "CF-1.8"
        assert back.attrs["checkpoint_hash"] in back.attrs["source"] and str(mosaic.parent) in back.attrs["history"]
        assert back["hrms"].rio.crs.to_epsg() == 32616
        assert back["hrms"].rio.transform() == xr.open_zarr(mosaic)["hrms"].rio.transform()
        np.testing.assert_array_equal(back["hrms"].values, xr.open_zarr(mosaic)["hrms"].values)
        # The provenance comes back whole from the netCDF file too.
        recorded = open_mosaic(mosaic).attrs
        assert decode_attrs(back.attrs)["model_config"] == recorded["model_config"]
        assert decode_attrs(back.attrs)["scene_sources"] == recorded["scene_sources"]
    assert isinstance(recorded["model_config"], dict) and recorded["steps"] == 2
