"""Ingest: scene files in, a validated scene store out, written atomically.

The readers (ssdiff_model.readers) validate the files (readable, same CRS, MS extent equal to the PAN's, an
integer ratio, finite values or a declared nodata) and raise errors naming the file; the store is written by
``tiling.write_scene_store`` into a hidden sibling directory that is renamed into place only once complete, so
a failure never leaves a half-written store, and an existing store is never touched.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Sequence

from prefect import task

from flows.retry import transient_failure
from ssdiff_model.readers import PansharpeningBatch, read_geotiff_pair, read_pair
from tiling import open_scene, sha256_file, write_scene_store

PathLike = str | os.PathLike


def read_scene(pan: PathLike | None, ms: Sequence[PathLike] = (), *, sensor: str | None = None,
               band_names: Sequence[str] = (), example: int | None = None):
    """The pair behind a scene: a PAN GeoTIFF with its MS GeoTIFF (or single-band MS files, in band order), or one
    .mat / .h5 file (then ``pan`` is that file and ``ms`` is empty, or the MS file of a two-file .mat pair).
    PanCollection files hold many examples: ``example`` picks one."""
    paths = [Path(p) for p in ([pan] if pan else [])]
    ms = [Path(p) for p in ms]
    if not paths:
        raise ValueError("ingest needs a PAN file (or one .mat / .h5 file) to read")
    tiffs = {".tif", ".tiff"}
    options = {"band_names": tuple(band_names)} if band_names else {}
    if paths[0].suffix.lower() in tiffs:
        if not ms:
            raise ValueError(f"{paths[0]}: a GeoTIFF PAN needs its MS file(s) (--ms)")
        pair = read_geotiff_pair(paths[0], ms[0] if len(ms) == 1 else ms, sensor=sensor, **options)
    else:
        if band_names:
            raise ValueError(f"{paths[0]}: --band-names only applies to GeoTIFF scenes")
        pair = read_pair(*paths, *ms, sensor=sensor)
    if isinstance(pair, PansharpeningBatch):
        if example is None:
            if len(pair) != 1:
                raise ValueError(f"{paths[0]}: a PanCollection file of {len(pair)} examples: choose one with "
                                 f"--example (0..{len(pair) - 1})")
            example = 0
        if not 0 <= example < len(pair):
            raise ValueError(f"{paths[0]}: example {example} out of range (the file holds {len(pair)})")
        pair = pair.pair(example)
    elif example not in (None, 0):
        raise ValueError(f"{paths[0]}: --example applies to PanCollection files only")
    return pair


def _temporary_sibling(out: Path) -> Path:
    # A sibling, not a system temp dir: the final rename must stay on one file system to be atomic.
    return out.with_name(f".{out.name}.partial-{uuid.uuid4().hex[:8]}")


def ingest_scene(pan: PathLike | None, ms: Sequence[PathLike] = (), out: PathLike = "scene.zarr", *,
                 sensor: str | None = None, band_names: Sequence[str] = (), nodata: float | None = None,
                 example: int | None = None) -> dict:
    """Read, validate and write one scene store at ``out``. Returns a summary (store path, shapes, sources).

    An existing ``out`` is an error unless it is a scene store made from the same files (same checksums), in
    which case it is kept as it is (a rerun of a pipeline resumes instead of failing)."""
    out = Path(out)
    pair = read_scene(pan, ms, sensor=sensor, band_names=band_names, example=example)
    if out.exists():
        return _existing_scene(out, pair.source)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out}: its folder {out.parent} does not exist")
    partial = _temporary_sibling(out)
    try:
        write_scene_store(partial, pair, sources=_source_names(pair.source), nodata=nodata)
        # rename() of a directory fails if the target appeared meanwhile (a concurrent ingest): we never clobber.
        os.rename(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return _summary(out)


def _source_names(paths: Sequence[Path]) -> dict[str, Path]:
    """Sources keyed by file name, or by full path where two files share a name (scene1/pan.tif, scene2/pan.tif)."""
    names = [p.name for p in paths]
    return {(p.name if names.count(p.name) == 1 else str(p)): p for p in paths}


def _existing_scene(out: Path, inputs: Sequence[Path]) -> dict:
    try:
        sources = open_scene(out).attrs["sources"]
    except ValueError as err:
        raise ValueError(f"{out}: already exists and is not a scene store; choose another --out") from err
    recorded = {entry["sha256"] for entry in sources.values()}
    given = {sha256_file(p) for p in inputs}
    if given != recorded:
        raise ValueError(f"{out}: a scene store from other files already exists there; remove it or choose "
                         f"another --out")
    return {**_summary(out), "reused": True}


def _summary(store: Path) -> dict:
    scene = open_scene(store)
    return {"scene_store": str(store), "pan_shape": list(scene["pan"].shape), "ms_shape": list(scene["ms"].shape),
            "ratio": scene.attrs["ratio"], "sensor": scene.attrs["sensor"], "crs": str(scene["pan"].rio.crs),
            "sources": scene.attrs["sources"], "reused": False}


@task(name="ingest", retries=2, retry_delay_seconds=5, retry_condition_fn=transient_failure)
def ingest_task(pan: str | None, ms: list[str], out: str, sensor: str | None = None,
                band_names: list[str] | None = None, nodata: float | None = None,
                example: int | None = None) -> dict:
    return ingest_scene(pan, ms, out, sensor=sensor, band_names=band_names or (), nodata=nodata, example=example)
