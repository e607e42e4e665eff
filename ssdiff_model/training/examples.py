"""Training examples as the network sees them: patches of a reduced-resolution pair in [0, 1], with the scene's
equalization, and that equalization applied; and the examples of one split unit of a training set (a scene, or a
strip of one), made with Wald's protocol, optionally co-registered or misregistered on purpose.

One implementation for the training store (``tiling.stores.training`` writes these arrays) and for the adaptation
of a checkpoint to one scene (``ssdiff_model.inference.adaptation``), so that a scene is fed to a fine-tune exactly
as the training store fed its base.

Arrays (n examples): ``pan`` (n, 1, s, s), ``ms`` (n, B, s/r, s/r), ``lms`` and ``hrms`` (n, B, s, s), all DN /
full scale clipped to [0, 1]; ``pan_gain``, ``pan_offset`` (n,) and ``band_gain``, ``band_mean`` (n, B): the
equalization (``ssdiff_model.science.equalization``) of the whole pair the patch comes from, in the same [0, 1] units.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ssdiff_model.data.pair import PansharpeningBatch, PansharpeningPair
from ssdiff_model.errors import BadInput
from ssdiff_model.science import equalization
from ssdiff_model.science import registration as coregistration
from ssdiff_model.science.equalization import PanEqualization, pan_equalization
from ssdiff_model.science.resample import upsampling_method
from ssdiff_model.science.wald import cut_patches, reduced_resolution_example
from ssdiff_model.training.split import _rank

if TYPE_CHECKING:
    from ssdiff_model.data.catalogue import SceneSource

__all__ = ["PATCH_SIZE", "SceneTooSmall", "Unit", "equalization_arrays", "equalized", "lms_method",
           "misregistration_targets", "normalised", "patch_examples", "spread", "unit_examples",
           "without_repeats"]

PATCH_SIZE = 64   # the training patch, in PAN pixels


def lms_method(ratio: int) -> str:
    """How training examples upsample their MS: ``upsampling_method``, as the network's input at inference."""
    return upsampling_method(ratio)


def normalised(image: np.ndarray, full_scale: float) -> np.ndarray:
    """DN / full scale as float32, clipped to [0, 1]."""
    return np.clip(np.asarray(image, dtype=np.float32) / np.float32(full_scale), 0.0, 1.0)


def equalization_arrays(equalizations: Sequence[PanEqualization], full_scale: float) -> dict[str, np.ndarray]:
    """One equalization per example as the four per-example arrays, in [0, 1] units."""
    return {"pan_gain": np.array([e.gain for e in equalizations], dtype=np.float32),
            "pan_offset": np.array([e.offset / full_scale for e in equalizations], dtype=np.float32),
            "band_gain": np.array([e.band_gains for e in equalizations], dtype=np.float32),
            "band_mean": np.array([e.band_means for e in equalizations], dtype=np.float32) / np.float32(full_scale)}


def patch_examples(pan: np.ndarray, ms_lr: np.ndarray, reference: np.ndarray, ratio: int, full_scale: float,
                   size: int = 64, stride: int | None = None) -> dict[str, np.ndarray]:
    """The examples of one reduced-resolution pair: pan (H, W), ms_lr (B, H/r, W/r) and its reference (B, H, W),
    in DN, cut into `size` patches every `stride` PAN pixels (``ssdiff_model.science.wald.cut_patches``).

    Raises:
        ValueError: the pair is smaller than one patch, or the sizes do not fit the ratio.
    """
    patches = cut_patches(pan, ms_lr, reference, size=size, stride=stride, lms_method=lms_method(ratio))
    return {"pan": normalised(patches.pan[:, None], full_scale), "ms": normalised(patches.ms_lr, full_scale),
            "lms": normalised(patches.lms, full_scale), "hrms": normalised(patches.reference, full_scale),
            **equalization_arrays([pan_equalization(pan, ms_lr, ratio)] * len(patches.pan), full_scale)}


def equalized(examples: dict[str, np.ndarray], pan: bool = False, bands: bool = False) -> dict[str, np.ndarray]:
    """The examples as a network trained with PAN (and band) equalization is fed them."""
    out = dict(examples)
    if pan:
        out["pan"] = out["pan"] * out["pan_gain"][:, None, None, None] + out["pan_offset"][:, None, None, None]
    if bands:
        gain, mean = out["band_gain"][:, :, None, None], out["band_mean"][:, :, None, None]
        for name in ("ms", "lms", "hrms"):
            out[name] = equalization.equalize_bands(out[name], gain, mean)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The examples of a split unit (a scene, or a strip of one)
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
    """(examples, protocol, registration) of one split unit (see `_pair_examples`).

    Args:
        unit: the split unit (its region and count of regions).
        data: the unit's scene as loaded (a pair, or a PanCollection batch whose examples are dealt into regions).
        size: the patch size, in PAN pixels.
        stride: the step between patches, in PAN pixels.
        coregister_ms: crop a full-resolution pair to put its MS back on its nominal place first.
        copies: (rows, cols) PAN-pixel offsets of the misregistered copies to add.

    Returns:
        The examples' arrays, the protocol that made them (text), and the measured MS offset (None without one).

    Raises:
        SceneTooSmall: the reduced-resolution PAN cannot hold one patch.
        BadInput: the pair does not fit the patch size and ratio.
    """
    if isinstance(data, PansharpeningBatch):
        chunks = np.array_split(np.arange(len(data)), unit.regions)
        return _batch_examples(data, list(chunks[unit.region]), size, stride)
    return _pair_examples(_region_of_pair(data, unit.region, unit.regions), size, stride, coregister_ms, copies)


def misregistration_targets(unit_id: str, count: int, reach: int, seed: int = 0) -> list[tuple[int, int]]:
    """`count` distinct (rows, cols) offsets in [-reach, reach], none (0, 0), drawn from the unit's id and `seed`
    (the same store every time).

    Args:
        unit_id: the unit's id.
        count: how many offsets.
        reach: the largest offset, in PAN pixels, along either axis.
        seed: the split's seed.

    Returns:
        The offsets, (rows, cols) in PAN pixels.

    Raises:
        BadInput: fewer than `count` offsets lie within `reach`.
    """
    choices = [(a, b) for a in range(-reach, reach + 1) for b in range(-reach, reach + 1) if (a, b) != (0, 0)]
    if count > len(choices):
        raise BadInput(f"{count} misregistered copies asked for, but only {len(choices)} offsets lie within "
                         f"{reach} PAN pixels")
    rng = np.random.default_rng(int(_rank(unit_id, seed)[:12], 16))
    return [choices[i] for i in rng.choice(len(choices), size=count, replace=False)]


def without_repeats(examples: dict[str, np.ndarray], seen: set[bytes]) -> tuple[dict[str, np.ndarray], int]:
    """`examples` less those whose PAN, MS and reference repeat an example already in the store (their digests are
    added to `seen`), and how many were dropped. The shared PanCollection-style file holds one patch 100 times: kept,
    it would be most of the 8-band store, and a repeat across sources could put one example on both sides.

    Args:
        examples: the arrays of some examples (`pan`, `ms`, `hrms` among them), or an empty dict.
        seen: the digests of the examples kept so far; updated in place.

    Returns:
        The examples kept, and the count dropped.
    """
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


def spread(n: int, k: int) -> np.ndarray:
    """k indexes spread evenly over range(n) (the validation examples the job samples).

    Args:
        n: the count of examples.
        k: the count wanted.

    Returns:
        At most k distinct sorted indexes (all n of them when k >= n).
    """
    if n == 0 or k <= 0:
        return np.zeros(0, dtype=int)
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))
