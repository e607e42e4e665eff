"""The training store: real scenes turned into reduced-resolution training examples, in one Zarr group.

The scenes come from `ssdiff_model.data.catalogue` (a family's `SceneSource`s), their examples from
`ssdiff_model.training.examples` (`unit_examples`) and their side from `ssdiff_model.training.split`
(`assign_splits`); this module writes them (`build_training_store`) and reads them back (`TrainingStore`).

Every example is a 64 x 64 PAN patch with its MS, 23-tap upsampled MS (`lms`) and reference (`hrms`), made with
Wald's protocol from the scene (`ssdiff_model.science.wald`: the sensor's MTF filters, decimation by the ratio,
interp23tap).
Pairs that already are reduced-resolution pairs with a reference (PAirMax RR, Pleiades, QuickBird RR, PanCollection
files) are used as they are: their reference is the `hrms`, and a PanCollection file's own `lms` is kept. An example
that repeats one already in the store (same PAN, MS and reference) is dropped and counted with its source.

Layout (one group per split, `train` and `validation`):

    <store>/train/pan          (n, 1, 64, 64)       float32 in [0, 1] (DN / the scene's full scale, clipped)
    <store>/train/ms           (n, B, 64/r, 64/r)
    <store>/train/lms          (n, B, 64, 64)
    <store>/train/hrms         (n, B, 64, 64)
    <store>/train/scene_index  (n,)                 int32, index into attrs["sources"]
    <store>/train/pan_gain     (n,)                 float32, PAN equalization of the example's scene
    <store>/train/pan_offset   (n,)                 float32, its offset in the same [0, 1] units as `pan`
    <store>/train/band_gain    (n, B)               float32, band equalization of the example's scene: the gains
    <store>/train/band_mean    (n, B)               float32, and the band means, in the [0, 1] units of `ms`
    <store>/validation/...     the same

The split is by scene (a whole scene, or with `regions > 1` a whole horizontal strip of one): no scene is on both
sides. It is deterministic: an explicit list of scene ids (by default a family's `held_out` scenes, so that new
shared data never changes what its checkpoints are scored on), or a fraction of the scenes ranked by a hash of their
id (most scenes keep their side when other scenes are added, but the count held out grows with the total). The
store's attributes list every source (files, sensor, ratio, bits, full scale, split, patch count, protocol). The
store is written to a temporary sibling and renamed into place, so a failure never leaves a half-written store and
never touches an existing one.

Every full-resolution pair's MS offset from its nominal place on the PAN grid is measured and recorded with its
source (`ssdiff_model.science.registration`); with `coregister` the pairs of the training split are cropped by whole
pixels
to put their MS back (the unknown-sensor VHR pairs are off by about one MS pixel), those of the validation split
never, so they stay what the quality table scores. `misregistered_copies` adds copies of every full-resolution
training pair cropped to sit a known whole number of PAN pixels off instead.

The PAN and band equalization (`ssdiff_model.science.equalization`) is taken over the whole reduced-resolution scene
(strip)
a patch comes from, as a mosaic's is over its whole scene; a PanCollection patch used as it is gets its own.

The store knows nothing of Ray: `TrainingStore.load(split, shard, num_shards)` gives a worker its examples.
"""
from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ssdiff_model.data.catalogue import FAMILIES, SceneSource
from ssdiff_model.errors import BadInput
from ssdiff_model.training.examples import (
    PATCH_SIZE,
    SceneTooSmall,
    Unit,
    equalized,
    misregistration_targets,
    unit_examples,
    without_repeats,
)
from ssdiff_model.training.split import assign_splits
from tiling import built_beside, objstore
from tiling.clock import utc_timestamp
from tiling.lock import store_lock

__all__ = ["TrainingStore", "build_training_store", "iter_sources_summary"]

STORE_FORMAT = "ssdiff-training-store"
STORE_VERSION = 3   # 2: pan_gain and pan_offset; 3: band_gain and band_mean
READABLE_VERSIONS = (2, STORE_VERSION)   # a version 2 store serves every run but those equalizing bands
SPLITS = ("train", "validation")
ARRAYS = ("pan", "ms", "lms", "hrms", "scene_index", "pan_gain", "pan_offset", "band_gain", "band_mean")
CHUNK_EXAMPLES = 32


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------

def _units(sources: Sequence[SceneSource], regions: int) -> list[Unit]:
    if regions < 1:
        raise BadInput(f"regions must be >= 1, got {regions}")
    return [Unit(s.id if regions == 1 else f"{s.id}#{k + 1}of{regions}", s, k, regions)
            for s in sources for k in range(regions)]


def _create_split(group, bands: int, ratio: int, size: int) -> dict[str, Any]:
    out = {}
    shapes = {"pan": (1, size, size), "ms": (bands, size // ratio, size // ratio), "lms": (bands, size, size),
              "hrms": (bands, size, size)}
    for name, shape in shapes.items():
        out[name] = group.create_array(name, shape=(0, *shape), chunks=(CHUNK_EXAMPLES, *shape), dtype="float32")
    out["scene_index"] = group.create_array("scene_index", shape=(0,), chunks=(4096,), dtype="int32")
    for name in ("pan_gain", "pan_offset"):
        out[name] = group.create_array(name, shape=(0,), chunks=(4096,), dtype="float32")
    for name in ("band_gain", "band_mean"):
        out[name] = group.create_array(name, shape=(0, bands), chunks=(4096, bands), dtype="float32")
    return out


def build_training_store(sources: Sequence[SceneSource], out: str | Path, *, family: str | None = None,
                         validation: float | Sequence[str] | None = None, split_seed: int = 0,
                         patch_size: int = PATCH_SIZE, stride: int | None = None, regions: int = 1,
                         coregister: bool = False,
                         misregistered_copies: int = 0, misregistration_reach: int | None = None,
                         overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Write the training store at `out` from `sources` and return its summary (the store's attributes).

    Every source must give the same number of MS bands and the same ratio (the family's when `family` is named).
    `validation` (see `assign_splits`) defaults to the family's `held_out` scenes among `sources`, else to 0.2.
    `stride` defaults to half the patch size. The MS offset of every full-resolution pair is measured and recorded
    (`ssdiff_model.science.registration`); with `coregister` the training pairs are cropped to it, the validation pairs
    never (they stay what the quality table scores). `misregistered_copies` adds that many copies of every
    full-resolution training pair with its MS moved by whole PAN pixels, up to `misregistration_reach` (default:
    half the ratio) off its place. An existing store is replaced only with `overwrite`, and only once the new one is
    complete."""
    import zarr

    out = objstore.as_path(out)
    stride = patch_size // 2 if stride is None else stride
    if objstore.exists(out) and not overwrite:
        raise FileExistsError(f"{out}: a store already exists here (pass overwrite to replace it)")
    if not sources:
        raise BadInput("no sources to build a training store from")
    spec = FAMILIES.get(family) if family else None
    if family and spec is None:
        raise BadInput(f"unknown training family {family!r}; expected one of {', '.join(FAMILIES)}")
    units = _units(sources, regions)
    if validation is None:
        named = [i for i in (spec.held_out if spec else ()) if i in {s.id for s in sources}]
        validation = named or 0.2
    reach = misregistration_reach if misregistration_reach is not None else max(1, (spec.ratio if spec else 4) // 2)
    sides = assign_splits([u.id for u in units], validation, split_seed)
    records: list[dict[str, Any]] = []
    seen: set[bytes] = set()   # digests of the examples written so far
    # On object storage the store is built in place (no rename there; see tiling.stores.atomic.built_beside): its lease
    # keeps a second build out of the same prefix.
    lock = store_lock(out) if objstore.is_url(out) else nullcontext()
    with lock, built_beside(out, "building the training store", replace=overwrite) as tmp:
        root = zarr.open_group(objstore.zarr_store(tmp), mode="w")
        arrays = None
        bands = ratio = None
        band_names: tuple[str, ...] = spec.band_names if spec else ()
        loaded: tuple[SceneSource, Any] | None = None
        for position, unit in enumerate(units):
            if loaded is None or loaded[0] is not unit.source:
                loaded = (unit.source, unit.source.load())
            data = loaded[1]
            where = ", ".join(unit.source.files())
            n_bands = data.ms_lr.shape[-3]
            if bands is None:
                bands, ratio = (spec.bands, spec.ratio) if spec else (n_bands, data.ratio)
                band_names = band_names or tuple(data.band_names)
                if patch_size % ratio or stride % ratio:
                    raise BadInput(f"patch size {patch_size} and stride {stride} must be multiples of the ratio "
                                   f"{ratio}")
                arrays = {side: _create_split(root.create_group(side), bands, ratio, patch_size) for side in SPLITS}
            if n_bands != bands or data.ratio != ratio:
                raise BadInput(f"{where}: {n_bands} MS bands at ratio {data.ratio}, but this store holds {bands} "
                                 f"bands at ratio {ratio}{f' (family {family})' if family else ''}")
            side = sides[unit.id]
            copies = (misregistration_targets(unit.id, misregistered_copies, reach, split_seed)
                      if side == "train" and misregistered_copies else [])
            try:
                examples, protocol, registration = unit_examples(unit, data, patch_size, stride,
                                                                 coregister and side == "train", copies)
            except SceneTooSmall as err:
                examples, protocol, registration = {}, f"skipped: {err}", None
                if progress:
                    print(f"{unit.id}: {err}; skipped", flush=True)
            examples, repeats = without_repeats(examples, seen)
            count = len(examples["pan"]) if examples else 0
            if count:
                target = arrays[side]
                for name in (a for a in ARRAYS if a != "scene_index"):
                    target[name].append(examples[name], axis=0)
                target["scene_index"].append(np.full(count, len(records), dtype=np.int32), axis=0)
            records.append({
                "id": unit.id, "source": unit.source.id, "dataset": unit.source.dataset, "paths": unit.source.files(),
                "sensor": data.sensor, "ratio": int(data.ratio), "bits": data.bits,
                "full_scale": float(data.full_scale),
                "band_names": list(data.band_names), "split": side, "patches": int(count), "protocol": protocol,
                "ms_offset_pan_px": registration, "repeats_dropped": repeats,
                "region": None if unit.regions == 1 else [unit.region + 1, unit.regions]})
            if progress:
                print(f"{unit.id}: {count} patches -> {side}", flush=True)
            if position + 1 == len(units) or units[position + 1].source is not unit.source:
                loaded = None  # free the scene before reading the next
        counts = {side: int(arrays[side]["pan"].shape[0]) for side in SPLITS}
        if counts["train"] == 0:
            raise BadInput(f"no training patches: every scene is too small for {patch_size}x{patch_size} patches "
                             f"or in the validation split")
        weight = Counter()
        for rec in records:
            weight[rec["full_scale"]] += rec["patches"]
        attrs = {
            "format": STORE_FORMAT, "version": STORE_VERSION, "family": family, "bands": int(bands),
            "ratio": int(ratio), "band_names": list(band_names), "patch_size": patch_size, "stride": stride,
            "normalisation": "DN / each scene's full scale, clipped to [0, 1]", "coregistered": bool(coregister),
            "misregistered_copies": {"count": misregistered_copies, "reach_pan_px": reach} if misregistered_copies
            else None,
            "full_scale": float(weight.most_common(1)[0][0]),
            "sensors": sorted({str(r["sensor"]) for r in records}),
            "split": {"unit": "scene" if regions == 1 else f"horizontal strip of a scene ({regions} per scene)",
                      "validation": validation if isinstance(validation, (int, float)) else list(validation),
                      "seed": split_seed},
            "counts": counts, "sources": records,
            "created": utc_timestamp(),
        }
        root.attrs.update(attrs)
    return attrs


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------

class TrainingStore:
    """Read side of a training store (what a Ray Train worker opens)."""

    def __init__(self, path: str | Path):
        import zarr

        self.path = str(path)
        try:
            self.group = zarr.open_group(objstore.zarr_store(self.path, read_only=True), mode="r")
        except Exception as err:  # zarr raises several types for a missing or foreign folder
            raise BadInput(f"{self.path}: not a readable training store ({type(err).__name__}: {err})") from err
        self.attrs = dict(self.group.attrs)
        if self.attrs.get("format") != STORE_FORMAT:
            raise BadInput(f"{self.path}: not a training store (format {self.attrs.get('format')!r}, expected "
                             f"{STORE_FORMAT!r}); build one with `ssdiff prepare-training`")
        if self.attrs.get("version") not in READABLE_VERSIONS:
            raise BadInput(f"{self.path}: training store version {self.attrs.get('version')!r}, this code reads "
                             f"version {STORE_VERSION}; rebuild it with `ssdiff prepare-training ... --overwrite`")

    @property
    def bands(self) -> int:
        return int(self.attrs["bands"])

    @property
    def ratio(self) -> int:
        return int(self.attrs["ratio"])

    @property
    def sources(self) -> list[dict[str, Any]]:
        return list(self.attrs["sources"])

    def count(self, split: str) -> int:
        return int(self.attrs["counts"][split])

    def load(self, split: str = "train", shard: int = 0, num_shards: int = 1, limit: int | None = None,
             equalize_pan: bool = False, equalize_bands: bool = False) -> dict[str, np.ndarray]:
        """Examples shard::num_shards of a split (all of them by default), at most `limit`, read chunk by chunk.
        With `equalize_pan`, `pan` comes equalized to its scene's MS intensity, with `equalize_bands` `ms`, `lms`
        and `hrms` come band-equalized to their scene (what such a model is fed and learns)."""
        if not 0 <= shard < num_shards:
            raise BadInput(f"shard {shard} out of range for {num_shards} shards")
        index = np.arange(shard, self._group(split)["pan"].shape[0], num_shards)
        return self._take(split, index if limit is None else index[:limit], equalize_pan, equalize_bands)

    def load_spread(self, split: str, limit: int, equalize_pan: bool = False,
                    equalize_bands: bool = False) -> dict[str, np.ndarray]:
        """At most `limit` examples of a split taken in turn from each of its scenes, evenly spaced within each, so
        a few validation examples score every held-out scene and not just the one with the most patches."""
        scene_of = self._group(split)["scene_index"][:]
        members = [np.flatnonzero(scene_of == scene) for scene in np.unique(scene_of)]
        share, left = [0] * len(members), min(limit, len(scene_of))
        while left > 0:   # one more example per scene and turn, from the scenes that still have one
            for i, m in enumerate(members):
                if left > 0 and share[i] < len(m):
                    share[i], left = share[i] + 1, left - 1
        picked = [m[np.linspace(0, len(m) - 1, k).round().astype(int)] for m, k in zip(members, share) if k]
        return self._take(split, np.sort(np.concatenate(picked)) if picked else np.zeros(0, int), equalize_pan,
                          equalize_bands)

    def _group(self, split: str):
        if split not in SPLITS:
            raise BadInput(f"split must be one of {SPLITS}, got {split!r}")
        return self.group[split]

    def _take(self, split: str, index: np.ndarray, equalize_pan: bool = False,
              equalize_bands: bool = False) -> dict[str, np.ndarray]:
        group = self._group(split)
        n = group["pan"].shape[0]
        if equalize_bands and "band_gain" not in group:
            raise BadInput(f"{self.path}: training store version {self.attrs.get('version')} has no band "
                             f"equalization; rebuild it with `ssdiff prepare-training ... --overwrite`")
        out = {}
        for name in (a for a in ARRAYS if a in group):
            array = group[name]
            parts = []
            for start in range(0, n, CHUNK_EXAMPLES * 32):
                stop = min(n, start + CHUNK_EXAMPLES * 32)
                wanted = index[(index >= start) & (index < stop)]
                if len(wanted):
                    parts.append(array[start:stop][wanted - start])
            out[name] = np.concatenate(parts) if parts else np.zeros((0, *array.shape[1:]), array.dtype)
        return equalized(out, pan=equalize_pan, bands=equalize_bands)


def iter_sources_summary(attrs: dict[str, Any]) -> Iterator[str]:
    for rec in attrs["sources"]:
        yield f"{rec['id']}: {rec['patches']} patches -> {rec['split']} ({rec['sensor']}, {rec['protocol']})"
