"""Ingest: scene files in, a validated scene store out, written atomically.

The readers (ssdiff_model.data) validate the files (readable, same CRS, MS extent equal to the PAN's, an
integer ratio, finite values or a declared nodata) and raise errors naming the file; ingest adds that the sensor
is one it knows and that the scene has data (a PAN, or an MS band, that is nodata throughout is an error: the
wrong --nodata, or an empty file). Pixels holding a file's declared nodata value, or --nodata, are stored as
nodata and come out as nodata; tiles without any valid pixel are not sharpened.

The store is written by ``tiling.write_scene_store`` into a hidden sibling directory that is renamed into place
only once complete, so a failure (a full disk included) never leaves a half-written store, and an existing store
is never touched.

A GeoTIFF scene streams (issue #21): ``read_geotiff_pair(lazy=True)`` validates it by passes that hold a band of
rows at a time and returns dask arrays, which the store is written from chunk by chunk, so memory is bounded by a
band, not by the scene (``infra.preflight.require_memory_for`` checks that much before reading). .mat / .h5 files
are read whole: PanCollection examples and full-resolution pairs are small by nature.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Sequence

import rasterio
from prefect import get_run_logger, task

from flows.retry import transient_failure
from infra.preflight import require_memory_for, require_store_path
from ssdiff_model.blocks import row_bands
from ssdiff_model.data.dispatch import read_pair
from ssdiff_model.data.geotiff import STREAM_GDAL_CACHE, read_geotiff_pair
from ssdiff_model.data.pair import PansharpeningBatch
from ssdiff_model.errors import BadInput
from ssdiff_model.science.radiometry import infer_full_scale
from ssdiff_model.science.registration import misregistration_warning
from ssdiff_model.science.sensors import get_sensor
from tiling import SceneAttrs, objstore
from tiling.lock import store_lock
from tiling.sources import remote_url
from tiling.stores.atomic import built_beside, require_folder_for, sha256_file
from tiling.stores.scene import nodata_mask, open_scene, write_scene_store

__all__ = ["ingest_scene", "ingest_task", "read_scene", "scene_warnings"]

PathLike = str | os.PathLike


def read_scene(pan: PathLike | None, ms: Sequence[PathLike] = (), *, sensor: str | None = None,
               band_names: Sequence[str] = (), example: int | None = None, nodata: float | None = None,
               full_scale: float | None = None):
    """The pair behind a scene, validated: a PAN GeoTIFF with its MS GeoTIFF (or single-band MS files, in band
    order), or one .mat / .h5 file (then ``pan`` is that file and ``ms`` is empty, or the MS file of a two-file
    .mat pair). PanCollection files hold many examples: ``example`` picks one. GeoTIFF pixels holding their
    file's declared nodata value come back as NaN; ``nodata`` is the DN the store will also treat as nodata.
    ``full_scale`` (the value that means 1.0) overrides what ``ssdiff_model.science.radiometry`` decides from the
    data. The pixels are read into memory; ``ingest_scene`` streams GeoTIFFs instead."""
    paths, ms = _inputs(pan, ms, sensor)
    with objstore.gdal_env():   # s3:// inputs: GDAL's /vsis3/ configured from the AWS_* variables
        return _read_scene(paths, ms, sensor=sensor, band_names=band_names, example=example, nodata=nodata,
                           full_scale=full_scale)


def _inputs(pan: PathLike | None, ms: Sequence[PathLike], sensor: str | None) -> tuple[list, list]:
    """The input paths, checked before any pixel is read: a PAN is given, the sensor is known, the buckets
    answer."""
    paths = [objstore.as_path(p) for p in ([pan] if pan else [])]
    ms = [objstore.as_path(p) for p in ms]
    if not paths:
        raise BadInput("ingest needs a PAN file (or one .mat / .h5 file) to read")
    if sensor is not None:
        try:
            get_sensor(sensor)   # a name looked up in a table, nothing else: an unknown one is an error
        except ValueError as err:
            raise BadInput(f"--sensor: {err}") from None
    for path in (*paths, *ms):   # a missing bucket or refused credentials: one line, before any pixel is read
        objstore.require_reachable(path, writable=False, what="input")
    return paths, ms


def _read_scene(paths, ms, *, sensor, band_names, example, nodata, full_scale, lazy=False):
    """``read_scene``'s work, inside the caller's GDAL environment. ``lazy``: a GeoTIFF scene comes back as dask
    arrays read by bands of rows (``read_geotiff_pair(lazy=True)``), validated by passes over the files that
    hold one band at a time; .mat / .h5 files (PanCollection examples, full-resolution pairs: small by nature)
    are read into memory whatever ``lazy`` says."""
    tiffs = {".tif", ".tiff"}
    options = {"band_names": tuple(band_names)} if band_names else {}
    if os.path.splitext(str(paths[0]))[1].lower() in tiffs:
        if not ms:
            raise BadInput(f"{paths[0]}: a GeoTIFF PAN needs its MS file(s) (--ms)")
        require_memory_for(paths[0], ms)
        options["full_scale"] = full_scale
        pair = read_geotiff_pair(paths[0], ms[0] if len(ms) == 1 else ms, sensor=sensor, mask_nodata=True,
                                 lazy=lazy, **options)
    else:
        if band_names:
            raise BadInput(f"{paths[0]}: --band-names only applies to GeoTIFF scenes")
        pair = read_pair(*paths, *ms, sensor=sensor)
    if isinstance(pair, PansharpeningBatch):
        if example is None:
            if len(pair) != 1:
                raise BadInput(f"{paths[0]}: a PanCollection file of {len(pair)} examples: choose one with "
                                 f"--example (0..{len(pair) - 1})")
            example = 0
        if not 0 <= example < len(pair):
            raise BadInput(f"{paths[0]}: example {example} out of range (the file holds {len(pair)})")
        pair = pair.pair(example)
    elif example not in (None, 0):
        raise BadInput(f"{paths[0]}: --example applies to PanCollection files only")
    if full_scale is not None and pair.radiometry is None:   # .mat / .h5: their own or the sensor's scale, replaced
        pair.radiometry = infer_full_scale(pair.pan, pair.ms_lr, dtype=pair.pan.dtype, declared=full_scale)
        pair.full_scale, pair.bits = pair.radiometry.value, pair.radiometry.bits
    _require_data(pair, nodata)
    _require_sensor_bands(pair, sensor)
    return pair


def _require_sensor_bands(pair, sensor: str | None) -> None:
    """A sensor given for files of more MS bands than it has is refused: its MTF gains cannot cover them."""
    if sensor is None:
        return
    known = get_sensor(sensor)
    if not known.is_generic and pair.n_bands > len(known.ms_gains):
        raise BadInput(f"{', '.join(map(str, pair.source))}: --sensor {known.name} has {len(known.ms_gains)} MS "
                         f"bands, these files hold {pair.n_bands}: name the sensor that took them")


def scene_warnings(pair, sensor: str | None) -> list[str]:
    """What the user must be told about a scene that ingest accepts: an adjustment a reader made to the pixels (a
    crop to whole MS pixels, an MS placed on the PAN grid by its georeferencing, a decimation), a full scale assumed
    from the data, pixels that saturate, and a
    sensor whose MTF gains were made for other bands than these."""
    where = ", ".join(map(str, pair.source))
    # The grid notes say where the MS was placed on the PAN grid when the shapes alone did not (a crop then
    # follows the georeferencing, and may move the other axis too).
    warnings = [f"{where}: {note}" for note in pair.notes
                if note.startswith(("cropped", "MS was on the PAN grid", "MS grid is"))]
    radiometry = pair.radiometry
    if radiometry is not None:
        if radiometry.assumed:
            warnings.append(f"{where}: full scale {radiometry.value:g} assumed: {radiometry.reason}")
        warnings += [f"{where}: {warning}" for warning in radiometry.warnings]
    if sensor is not None:
        known = get_sensor(sensor)
        if not known.is_generic and pair.n_bands < len(known.ms_gains):
            warnings.append(f"{where}: --sensor {known.name} has {len(known.ms_gains)} MS bands, these files "
                            f"hold {pair.n_bands}: the MTF gains of its first {pair.n_bands} "
                            f"({', '.join(known.band_names[:pair.n_bands])}) are used; check --sensor")
    return warnings


def _require_data(pair, nodata: float | None) -> None:
    """A scene whose PAN, or one of whose MS bands, is nodata throughout has nothing to sharpen: an error naming
    the file (most likely a wrong --nodata, or an empty file), not a mosaic of NaN. Read a band of rows at a
    time, stopping at the first valid pixel."""
    files = [str(p) for p in pair.source]
    because = f" (nodata value {nodata:g})" if nodata is not None else ""
    if _all_nodata(pair.pan, nodata):
        raise BadInput(f"{files[0]}: every PAN pixel is nodata{because}: nothing to sharpen")
    empty = [str(name) for k, name in enumerate(pair.band_names) if _all_nodata(pair.ms_lr[k], nodata)]
    if empty:
        raise BadInput(f"{', '.join(files[1:] or files)}: every pixel of MS band(s) {', '.join(empty)} is "
                         f"nodata{because}: nothing to sharpen")


def _all_nodata(image, nodata: float | None) -> bool:
    return all(nodata_mask(block, nodata).all() for _, block in row_bands(image))


def ingest_scene(pan: PathLike | None, ms: Sequence[PathLike] = (), out: PathLike = "scene.zarr", *,
                 sensor: str | None = None, band_names: Sequence[str] = (), nodata: float | None = None,
                 example: int | None = None, full_scale: float | None = None,
                 provenance: Mapping[str, Any] | None = None) -> dict:
    """Read, validate and write one scene store at ``out``. Returns a summary (store path, shapes, sources,
    warnings: see ``scene_warnings``). ``provenance`` adds attributes to the store (where the files came from:
    flows.stac records its item).

    An existing ``out`` is an error unless it is a scene store made from the same files (same checksums) with the
    same nodata and full scale, in which case it is kept as it is (a rerun of a pipeline resumes)."""
    out = objstore.as_path(out)
    require_store_path(out)
    if objstore.is_url(out):
        require_folder_for(out)   # the bucket and the credentials, before minutes of reading
    paths, ms = _inputs(pan, ms, sensor)
    # A GeoTIFF scene streams: it is read while the store is written, so GDAL's s3:// settings span both, and
    # GDAL's block cache is held to what streaming needs instead of its default share of the machine's memory.
    with objstore.gdal_env(), rasterio.Env(GDAL_CACHEMAX=STREAM_GDAL_CACHE):
        pair = _read_scene(paths, ms, sensor=sensor, band_names=band_names, example=example, nodata=nodata,
                           full_scale=full_scale, lazy=True)
        return _write_scene(out, pair, sensor=sensor, nodata=nodata, provenance=provenance)


def _write_scene(out, pair, *, sensor, nodata, provenance) -> dict:
    """The store of ``pair`` at ``out`` (or the existing one made of the same files), and the summary."""
    warnings = scene_warnings(pair, sensor)
    if objstore.exists(out):
        return _existing_scene(out, pair, nodata, warnings)
    require_folder_for(out)
    # On an object store the store is written in place (no rename there) and a concurrent ingest would write into
    # the same objects: the store's lease serialises them (tiling.lease); locally the rename does.
    lock = store_lock(out) if objstore.is_url(out) else nullcontext()
    try:
        with lock:
            if objstore.exists(out):   # another ingest committed it while we read
                return _existing_scene(out, pair, nodata, warnings)
            with built_beside(out, "writing the scene store; nothing was kept") as partial:
                write_scene_store(partial, pair, sources=_source_names(pair.source), nodata=nodata,
                                  provenance=provenance)
    except OSError:
        if not objstore.exists(out):
            raise
        # A concurrent ingest renamed its store into place first: it is ours if made of the same files.
        return _existing_scene(out, pair, nodata, warnings)
    return _summary(out, warnings)


def _source_names(paths: Sequence[Path]) -> dict[str, Path]:
    """Sources keyed by file name, or by full path where two files share a name (scene1/pan.tif, scene2/pan.tif)."""
    names = [_file_name(p) for p in paths]
    return {(name if names.count(name) == 1 else str(p)): p for name, p in zip(names, paths)}


def _file_name(path) -> str:
    """The file's name; of a URL read through /vsicurl (a remote STAC asset), the name at the end of the URL; of
    an object (s3://...), its key's last part."""
    url = remote_url(path)
    return url.rstrip("/").rsplit("/", 1)[-1].split("?")[0] if url else objstore.name(path)


def _existing_scene(out: Path, pair, nodata: float | None, warnings: list[str]) -> dict:
    try:
        attrs = SceneAttrs.from_attrs(open_scene(out).attrs)
    except ValueError as err:
        raise BadInput(f"{out}: already exists and is not a scene store; choose another --out") from err
    recorded = {entry["sha256"] for entry in attrs.sources.values()}
    given = {sha256_file(p) for p in pair.source}
    if given != recorded:
        raise BadInput(f"{out}: a scene store from other files already exists there; remove it or choose "
                         f"another --out")
    # The same files read another way give other pixels: reusing the store would silently ignore the change.
    for name, now, before in (("nodata", nodata, attrs.nodata),
                              ("full scale", float(pair.full_scale), attrs.full_scale)):
        if now != before:
            raise BadInput(f"{out}: a scene store of these files with {name} {before} already exists there, "
                             f"this ingest has {name} {now}; remove it or choose another --out")
    return {**_summary(out, warnings), "reused": True}


def _summary(store: Path, warnings: Sequence[str] = ()) -> dict:
    scene = open_scene(store)
    attrs = SceneAttrs.from_attrs(scene.attrs)
    offset = attrs.ms_offset_pan_px
    warning = misregistration_warning(offset, attrs.ratio)
    return {"scene_store": str(store), "pan_shape": list(scene["pan"].shape), "ms_shape": list(scene["ms"].shape),
            "ratio": attrs.ratio, "sensor": attrs.sensor, "crs": str(scene["pan"].rio.crs),
            "sources": attrs.sources, "ms_offset_pan_px": None if offset is None else offset.as_attrs(),
            "full_scale": attrs.full_scale, "radiometry": attrs.radiometry,
            "warnings": [*warnings, *([f"{store}: {warning}"] if warning else [])], "reused": False}


@task(name="ingest", retries=2, retry_delay_seconds=5, retry_condition_fn=transient_failure)
def ingest_task(pan: str | None, ms: list[str], out: str, sensor: str | None = None,
                band_names: list[str] | None = None, nodata: float | None = None,
                example: int | None = None, full_scale: float | None = None) -> dict:
    summary = ingest_scene(pan, ms, out, sensor=sensor, band_names=band_names or (), nodata=nodata, example=example,
                           full_scale=full_scale)
    for warning in summary["warnings"]:
        get_run_logger().warning(warning)
    return summary
