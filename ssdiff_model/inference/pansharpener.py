"""The public model API: load a checkpoint, sharpen PAN + MS arrays given in digital numbers (DN).

    sharpener = Pansharpener.from_checkpoint("ssdiff-8band-r4")
    hrms = sharpener.sharpen(pan, ms_lr, seed=0)     # (B, H, W) float32 DN; steps: the checkpoint's recommendation

``sharpen`` cuts the image into the pipeline's tiles (``ssdiff_model.inference.tile_grid``) and samples them with the
pipeline's own loop (``ssdiff_model.inference.tiled``), so its cost grows linearly with the pixels and its output
equals the
mosaic of ``ssdiff sharpen`` for the same seed, steps, tile, halo and batch size. ``sharpen_whole`` is the
one-shot call: one network input of the whole image, whose global attention costs the square of its pixels.

``sharpen_tiles`` is the batch entry point of the tiling and Ray code: it takes a stack of equally sized
tiles and the starting noise of each (the caller derives it from global pixel positions, so overlapping
tiles see the same noise) and, for a checkpoint trained on equalized PANs (or MS bands), the equalization of the
whole scene.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssdiff_model.blocks import is_lazy
from ssdiff_model.errors import BadInput
from ssdiff_model.inference.tile_grid import NETWORK_SIZE_MULTIPLE, TileGrid
from ssdiff_model.inference.tiled import sample_tiles
from ssdiff_model.model.checkpoint import Checkpoint, load_checkpoint
from ssdiff_model.model.diffusion import GaussianDiffusion
from ssdiff_model.model.dihedral import self_ensemble
from ssdiff_model.model.lora import add_lora, merge_lora
from ssdiff_model.model.network import build_network
from ssdiff_model.model.sampling import require_ensemble, resolve_sampling
from ssdiff_model.science.back_projection import DEGRADATIONS, back_project
from ssdiff_model.science.equalization import PanEqualization, pan_equalization
from ssdiff_model.science.radiometry import FullScale, infer_full_scale
from ssdiff_model.science.resample import upsample_ms, upsampling_method

__all__ = ["NETWORK_SIZE_MULTIPLE", "Pansharpener", "network_from_checkpoint"]


def network_from_checkpoint(ckpt: Checkpoint, ema: bool = True) -> nn.Module:
    """Rebuild the network (EMA weights by default); LoRA adapters, if the run used them, are merged."""
    weights = ckpt.ema_weights if ema and ckpt.ema_weights is not None else ckpt.weights
    net = build_network(ckpt.config)
    lora = ckpt.training.get("lora")
    if lora:
        add_lora(net, lora["rank"], lora["alpha"])
    net.load_state_dict(weights)  # copies into float32 parameters, so fp16-stored weights are upcast
    if lora:
        merge_lora(net)
    return net


class Pansharpener:
    def __init__(self, net: nn.Module, *, full_scale: float, ratio: int, sensor: str, band_names: list[str],
                 checkpoint_hash: str = "", source: str = "<in memory>", equalizes_pan: bool = False,
                 equalizes_bands: bool = False, device: torch.device | str | None = None):
        self.device = torch.device(device) if device is not None else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.net = net.to(self.device).eval()
        self.diffusion = GaussianDiffusion()
        self.full_scale = float(full_scale)
        self.ratio = int(ratio)
        self.sensor = sensor
        self.band_names = list(band_names)
        self.checkpoint_hash = checkpoint_hash
        self.source = source  # where the weights came from, for error messages
        self.equalizes_pan = bool(equalizes_pan)  # trained on PANs equalized to their scene (see sharpen_tiles)
        self.equalizes_bands = bool(equalizes_bands)  # and on MS bands equalized to that PAN
        self.checkpoint: Checkpoint | None = None  # what it was loaded from (from_checkpoint)
        if len(self.band_names) != self.bands:
            raise BadInput(f"{len(self.band_names)} band names given for a {self.bands}-band network")

    @classmethod
    def from_checkpoint(cls, path_or_name: str | Path | Checkpoint, device: torch.device | str | None = None,
                        ema: bool = True) -> "Pansharpener":
        """The Pansharpener of a checkpoint file, a shipped checkpoint's name, or a Checkpoint in memory."""
        ckpt = path_or_name if isinstance(path_or_name, Checkpoint) else load_checkpoint(path_or_name)
        source = "<adapted in memory>" if isinstance(path_or_name, Checkpoint) else str(path_or_name)
        sharpener = cls(network_from_checkpoint(ckpt, ema), full_scale=ckpt.full_scale, ratio=ckpt.ratio,
                        sensor=ckpt.sensor, band_names=ckpt.band_names, checkpoint_hash=ckpt.content_hash,
                        source=source, equalizes_pan=bool(ckpt.training.get("pan_equalization")),
                        equalizes_bands=bool(ckpt.training.get("band_equalization")), device=device)
        sharpener.checkpoint = ckpt
        return sharpener

    def adapted(self, pan: np.ndarray, ms_lr: np.ndarray, iterations: int | None = None, seed: int = 0,
                full_scale: float | None = None, sensor: str | None = None, **settings: Any) -> "Pansharpener":
        """A new Pansharpener fine-tuned on this scene at reduced resolution (target-adaptive L-BAF, see
        ``ssdiff_model.inference.adaptation``); this one is left unchanged. The same seed gives the same weights.

        Args:
            pan, ms_lr: the scene in DN, (H, W) and (B, H/r, W/r).
            iterations: L-BAF steps on the scene (None: ``AdaptationConfig``'s default).
            seed: timesteps, noise, batches and augmentation of the fine-tune.
            full_scale: the scene's full scale in DN (default the checkpoint's).
            sensor: the scene's sensor for Wald's MTF filters (default the checkpoint's).
            settings: further ``AdaptationConfig`` fields (lr, every, batch_size, stride, held_out, min_gain).

        Returns:
            The adapted Pansharpener; its ``checkpoint`` records the base's hash and the settings.
        """
        from ssdiff_model.inference.adaptation import AdaptationConfig, adapt_checkpoint

        config = AdaptationConfig(seed=seed, **settings, **({} if iterations is None else {"iterations": iterations}))
        base = self.checkpoint if self.checkpoint is not None else self._as_checkpoint()
        adapted = adapt_checkpoint(base, pan, ms_lr, config, full_scale=full_scale, sensor=sensor, device=self.device)
        return Pansharpener.from_checkpoint(adapted, device=self.device)

    def _as_checkpoint(self) -> Checkpoint:
        """The live network as a checkpoint (for a Pansharpener built from a network, not a file)."""
        weights = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        return Checkpoint(config=dict(self.net.config), weights=weights, ema_weights=None, full_scale=self.full_scale,
                          sensor=self.sensor, band_names=self.band_names, ratio=self.ratio,
                          training={"pan_equalization": self.equalizes_pan, "band_equalization": self.equalizes_bands},
                          content_hash=self.checkpoint_hash)

    @property
    def _upsampling(self) -> str:
        """The toolbox's 23-tap interpolator, which exists for powers of 2 only; bicubic otherwise."""
        return upsampling_method(self.ratio)

    @property
    def equalizes(self) -> bool:
        """Does the network see the scene equalized (its PAN, its MS bands): then it needs the scene's statistics."""
        return self.equalizes_pan or self.equalizes_bands

    @property
    def bands(self) -> int:
        return int(self.net.config["bands"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.net.config)

    # ---- public entry points -----------------------------------------------------------------------

    def sharpen(self, pan: np.ndarray, ms_lr: np.ndarray, steps: int | None = None, seed: int = 0, tile: int = 64,
                halo: int | None = None, batch_size: int = 8, full_scale: float | None = None,
                sampler: str | None = None, back_projection: int | None = None,
                sensor: str | None = None, ms_degradation: str = "mtf", ensemble: int | None = None) -> np.ndarray:
        """Sharpen an image tile by tile, as the pipeline does.

        The image is cut into the pipeline's tiles (windows of ``tile`` PAN pixels overlapping by ``halo``, each
        writing its core), every tile starts from noise keyed to its global pixel positions and ``seed``, and the
        tiles are sampled ``batch_size`` at a time: the result equals, bit for bit, the mosaic that ``ssdiff
        sharpen`` (or ``tiling.sharpen_array``) makes of the same arrays with the same settings. NaN pixels are
        nodata, handled as the pipeline does: filled with their window's mean for the network, NaN in the output
        wherever the PAN pixel or the MS pixel of the band above it is NaN. A checkpoint that equalizes its
        inputs takes the equalization from these arrays (the whole image, like the pipeline's scene).

        Args:
            pan: PAN ``(H, W)`` in DN.
            ms_lr: MS ``(B, H / r, W / r)`` in DN, ``r`` the checkpoint's ratio.
            steps: DDIM steps (None: the checkpoint's recommendation, else the project's default; see
                ``ssdiff_model.model.sampling.resolve_sampling``).
            seed: seed of the position-keyed starting noise.
            tile: tile side in PAN pixels (a multiple of ``lcm(r, 4)``).
            halo: overlap on each side of a tile's core, in PAN pixels (a multiple of ``lcm(r, 4)``; None: as
                ``steps``).
            batch_size: tiles per network call; part of what fixes the output's last bits.
            full_scale: the DN that means 1.0 for these images; None: inferred from the arrays (see
                ``full_scale_of``).
            sampler: "consistent" or "release" (``GaussianDiffusion.ddim_sample``; None: as ``steps``).
            back_projection: iterations of back-projection onto the MS after sampling (``sharpen_tiles``; None: as
                ``steps``).
            sensor: the image's sensor, whose MTF the back-projection degrades with (None: the checkpoint's; one
                the toolbox does not know gets its generic gains).
            ms_degradation: how the MS was made from the scene ("mtf": a sensor's MS, Wald's protocol; "bicubic":
                PanCollection's examples; ``ssdiff_model.science.back_projection``).
            ensemble: dihedral views averaged per tile (``sharpen_tiles``; None: as ``steps``).

        Returns:
            ``(B, H, W)`` float32 DN in ``[0, full scale]``, NaN where the input is nodata.
        """
        settings, _ = resolve_sampling(self.checkpoint, steps=steps, halo=halo, sampler=sampler,
                                       back_projection=back_projection, ensemble=ensemble)
        pan, ms_lr = np.asarray(pan), np.asarray(ms_lr)
        self._check_image_shapes(pan, ms_lr)
        scale = self.full_scale_of(pan, ms_lr, full_scale).value   # from the arrays as given: dtype is evidence
        return self._sharpen_scene(*self._as_scene(pan, ms_lr), scale, steps=settings["steps"], seed=seed, tile=tile,
                                   halo=settings["halo"], batch_size=batch_size, sampler=settings["sampler"],
                                   back_projection=settings["back_projection"], sensor=sensor,
                                   ms_degradation=ms_degradation, ensemble=settings["ensemble"])

    def _sharpen_scene(self, pan: np.ndarray, ms_lr: np.ndarray, full_scale: float, *, steps: int, seed: int,
                       tile: int, halo: int, batch_size: int, sampler: str = "consistent", back_projection: int = 0,
                       sensor: str | None = None, ms_degradation: str = "mtf", ensemble: int = 1) -> np.ndarray:
        """``sharpen`` once the full scale is decided and the arrays are a scene's (float32, NaN = nodata)."""
        grid = TileGrid(height=pan.shape[0], width=pan.shape[1], ratio=self.ratio, tile_size=tile, halo=halo)
        equalization = pan_equalization(pan, ms_lr, self.ratio) if self.equalizes else None
        hrms = np.full((ms_lr.shape[0], *pan.shape), np.nan, dtype=np.float32)
        for part, core in sample_tiles(self, pan, ms_lr, list(grid.tiles()), batch_size=batch_size, seed=seed,
                                       steps=steps, full_scale=full_scale, equalization=equalization,
                                       sampler=sampler, back_projection=back_projection, sensor=sensor,
                                       ms_degradation=ms_degradation, ensemble=ensemble):
            if core is not None:
                hrms[(slice(None), *part.core)] = core
        return hrms

    def sharpen_whole(self, pan: np.ndarray, ms_lr: np.ndarray, steps: int | None = None, seed: int = 0,
                      full_scale: float | None = None, sampler: str | None = None,
                      back_projection: int | None = None, sensor: str | None = None,
                      ms_degradation: str = "mtf", ensemble: int | None = None) -> np.ndarray:
        """Sharpen an image as one network input: global attention over all its pixels at once.

        The cost of that attention grows with the square of the pixel count, and the network was trained on
        tiles, never on such token counts: for more than a tile's worth of pixels use ``sharpen``. The starting
        noise is drawn from ``torch.Generator().manual_seed(seed)`` over the whole image, so the output differs
        from ``sharpen``'s. Nodata (NaN) is refused.

        Args:
            pan: PAN ``(H, W)`` in DN.
            ms_lr: MS ``(B, H / r, W / r)`` in DN.
            steps: DDIM steps.
            seed: seed of the starting noise.
            full_scale: the DN that means 1.0 for these images; None: inferred (see ``full_scale_of``).
            sampler, back_projection, sensor, ms_degradation, ensemble: as ``sharpen``.

        Returns:
            ``(B, H, W)`` float32 DN in ``[0, full scale]``.
        """
        settings, _ = resolve_sampling(self.checkpoint, steps=steps, sampler=sampler, back_projection=back_projection,
                                       ensemble=ensemble)
        steps, sampler = settings["steps"], settings["sampler"]
        pan, ms_lr = np.asarray(pan), np.asarray(ms_lr)
        self._check_image_shapes(pan, ms_lr)
        scale = self.full_scale_of(pan, ms_lr, full_scale).value
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((1, ms_lr.shape[0], *pan.shape), generator=generator).numpy()
        equalization = pan_equalization(pan, ms_lr, self.ratio) if self.equalizes else None
        return self.sharpen_tiles(pan[None], ms_lr[None], noise, steps=steps, full_scale=scale,
                                  equalization=equalization, sampler=sampler,
                                  back_projection=settings["back_projection"], sensor=sensor,
                                  ms_degradation=ms_degradation, ensemble=settings["ensemble"])[0]

    def sharpen_tiles(self, pan: np.ndarray, ms_lr: np.ndarray, noise: np.ndarray, steps: int = 10,
                      full_scale: float | None = None, equalization: PanEqualization | None = None,
                      sampler: str = "consistent", lms: np.ndarray | None = None, back_projection: int = 0,
                      sensor: str | None = None, ms_degradation: str = "mtf", ensemble: int = 1) -> np.ndarray:
        """N tiles: pan (N, H, W), ms_lr (N, B, h, w) in DN, noise (N, B, H, W) -> (N, B, H, W) float32 DN.

        With ``ensemble`` > 1 each tile is sampled in that many dihedral views (turned and mirrored, its noise
        too) and the answers, turned back, are averaged (``ssdiff_model.model.dihedral.self_ensemble``): the cost
        is ``ensemble`` samplings.

        With ``back_projection`` > 0 each sampled tile is then made consistent with its own MS by that many
        iterations of back-projection (``ssdiff_model.science.back_projection``: its degradation by the sensor's
        MTF and the ratio gives the MS back), whole tile with its halo, before the caller keeps its core.

        Args:
            equalization: the equalization of the scene the tiles come from (``pan_equalization`` over the whole
                scene), required by a checkpoint trained on equalized PANs or bands and unused by others.
            sampler: "consistent" or "release" (``GaussianDiffusion.ddim_sample``).
            lms: (N, B, H, W) DN, the MS already upsampled to the PAN grid (a PanCollection file's ``lms``);
                default: upsampled here with the toolbox's interpolator.
            back_projection: iterations of back-projection onto each tile's MS (0: none).
            sensor: the tiles' sensor, for the back-projection's MTF (None: the checkpoint's; one the toolbox does
                not know gets its generic gains).
            ms_degradation: how the tiles' MS was made ("mtf" or "bicubic"), the back-projection's degradation.
            ensemble: dihedral views averaged per tile (1, 2, 4 or 8; 1: the tile as given).
        """
        pan, ms_lr, noise = np.asarray(pan), np.asarray(ms_lr), np.asarray(noise)
        self._check(pan, ms_lr, noise)
        require_ensemble(ensemble, "sharpen_tiles")
        if ms_degradation not in DEGRADATIONS:   # refused even when nothing projects: a typo is not a setting
            raise BadInput(f"unknown MS degradation {ms_degradation!r}; expected one of {DEGRADATIONS}")
        if lms is not None and np.shape(lms) != noise.shape:
            raise BadInput(f"lms has shape {np.shape(lms)}, expected {noise.shape} (the tiles' MS on the PAN grid)")
        if lms is not None and self.equalizes_bands:
            raise BadInput(f"checkpoint {self.source} equalizes the MS bands: it upsamples them itself, pass no lms")
        scale = float(full_scale or self.full_scale)
        if not np.isfinite(scale) or scale <= 0:
            raise BadInput(f"full scale must be a positive number of DN, got {full_scale}")
        if self.equalizes and equalization is None:
            what = "MS bands" if self.equalizes_bands else "PANs"
            raise BadInput(f"checkpoint {self.source} was trained on {what} equalized to their scene: pass the "
                             f"scene's equalization (ssdiff_model.science.equalization.pan_equalization of the whole "
                             f"PAN and MS)")
        ms_dn = ms_lr
        if self.equalizes_pan:
            pan = equalization.apply(pan.astype(np.float32))
        bounds = (0.0, 1.0)
        if self.equalizes_bands:
            ms_lr = equalization.apply_bands(ms_lr.astype(np.float32))
            # a valid image lies between the images of 0 and of the full scale
            limits = (equalization.apply_bands(np.full((self.bands, 1, 1), dn, np.float32)) / scale
                      for dn in (0, scale))
            bounds = tuple(torch.from_numpy(limit[None]).to(self.device) for limit in limits)
        if lms is None:
            lms = np.stack([upsample_ms(tile, self.ratio, self._upsampling) for tile in ms_lr.astype(np.float64)])
        tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device) for a in
                   (pan[:, None] / scale, lms / scale, ms_lr / scale, noise)]
        pan_t, lms_t, ms_t, noise_t = self._pad(*tensors)

        def sample(pan_v, lms_v, ms_v, noise_v):
            return self.diffusion.ddim_sample(self.net, pan_v, lms_v, ms_v, steps=steps, noise=noise_v, bounds=bounds,
                                              sampler=sampler)

        with torch.inference_mode():
            image = self_ensemble(sample, (pan_t, lms_t, ms_t, noise_t), ensemble)
        height, width = pan.shape[-2:]
        hrms = image[..., :height, :width].float().cpu().numpy() * scale
        if self.equalizes_bands:
            hrms = equalization.invert_bands(hrms)
        if back_projection:
            hrms = np.stack([back_project(h, m, self.ratio, sensor or self.sensor, back_projection, self._upsampling,
                                          ms_degradation) for h, m in zip(hrms, ms_dn)])
        return np.clip(hrms, 0, scale).astype(np.float32)

    # ---- helpers -----------------------------------------------------------------------------------

    def full_scale_of(self, pan: np.ndarray, ms_lr: np.ndarray, full_scale: float | None = None) -> FullScale:
        """The full scale (the DN that means 1.0) to sharpen these arrays with, and why.

        Training divided every scene by its own full scale, so an image is sharpened with its own, which need not
        be the checkpoint's: 16-bit data clipped to an 8-bit checkpoint's 255 would come back wrecked without a
        word. ``ssdiff_model.science.radiometry.infer_full_scale`` decides it from the arrays' dtype and values, with
        the
        checkpoint's full scale as the sensor's nominal one; a guess, or pixels that will saturate, is reported
        as a ``UserWarning`` that says how to override it.

        Args:
            pan: PAN in DN, as given (its dtype is part of the evidence; NaN = nodata); NumPy or dask.
            ms_lr: MS in DN, as given; NumPy or dask.
            full_scale: the caller's full scale; None to infer it.

        Returns:
            The decision (``value``, ``reason``, ...).

        Raises:
            RadiometryError: a ValueError, when the radiometry cannot be decided safely (negative DN, values
                beyond 16 bits, no valid pixel); its message says what to pass.
        """
        # Lazy (dask) arrays stay lazy: infer_full_scale walks them a band of rows at a time.
        pan, ms_lr = (a if is_lazy(a) else np.asarray(a) for a in (pan, ms_lr))
        decision = infer_full_scale(pan, ms_lr, dtype=np.result_type(pan.dtype, ms_lr.dtype),
                                    sensor_default=self.full_scale, declared=full_scale)
        # A guess is worth a word when it departs from the checkpoint's own full scale (floats that look like
        # the checkpoint's DN are assumed too, and would warn on every call); saturating pixels always are.
        notes = ([decision.reason] if decision.assumed and decision.value != self.full_scale else [])
        notes += list(decision.warnings)
        if notes:
            warnings.warn(f"checkpoint {self.source} (full scale {self.full_scale:g}): {'; '.join(notes)}",
                          UserWarning, stacklevel=3)
        return decision

    def _check_image_shapes(self, pan: np.ndarray, ms_lr: np.ndarray) -> None:
        if pan.ndim != 2 or ms_lr.ndim != 3:
            raise BadInput(f"sharpen expects pan (H, W) and ms_lr (B, h, w), got pan {pan.shape} "
                             f"and ms_lr {ms_lr.shape}")
        self._check_bands_and_ratio(pan[None], ms_lr[None])

    def _as_scene(self, pan: np.ndarray, ms_lr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 copies with every non-finite pixel NaN (nodata), as ingest stores a scene; a PAN, or an MS band,
        without a valid pixel is refused as ingest refuses it."""
        pan, ms_lr = (np.where(np.isfinite(a), a, np.nan).astype(np.float32) for a in (pan, ms_lr))
        if np.isnan(pan).all():
            raise BadInput("every PAN pixel is nodata (NaN): nothing to sharpen")
        empty = [name for name, band in zip(self.band_names, ms_lr) if np.isnan(band).all()]
        if empty:
            raise BadInput(f"every pixel of MS band(s) {', '.join(empty)} is nodata (NaN): nothing to sharpen")
        return pan, ms_lr

    def _check_bands_and_ratio(self, pan: np.ndarray, ms_lr: np.ndarray) -> None:
        if ms_lr.shape[1] != self.bands:
            raise BadInput(f"MS has {ms_lr.shape[1]} bands but checkpoint {self.source} expects {self.bands} "
                             f"({', '.join(self.band_names)})")
        height, width = pan.shape[-2:]
        ms_h, ms_w = ms_lr.shape[2:]
        if (height, width) != (ms_h * self.ratio, ms_w * self.ratio):
            raise BadInput(f"PAN is {height}x{width} and MS {ms_h}x{ms_w}, but checkpoint {self.source} expects "
                             f"ratio {self.ratio}: PAN {ms_h * self.ratio}x{ms_w * self.ratio} for this MS")

    def _check(self, pan: np.ndarray, ms_lr: np.ndarray, noise: np.ndarray) -> None:
        if pan.ndim != 3 or ms_lr.ndim != 4 or noise.ndim != 4:
            raise BadInput(f"sharpen_tiles expects pan (N, H, W), ms_lr (N, B, h, w), noise (N, B, H, W); "
                             f"got {pan.shape}, {ms_lr.shape}, {noise.shape}")
        self._check_bands_and_ratio(pan, ms_lr)
        if pan.shape[0] != ms_lr.shape[0]:
            raise BadInput(f"{pan.shape[0]} PAN tiles but {ms_lr.shape[0]} MS tiles")
        height, width = pan.shape[-2:]
        if noise.shape != (pan.shape[0], self.bands, height, width):
            raise BadInput(f"noise has shape {noise.shape}, expected {(pan.shape[0], self.bands, height, width)}")
        for name, array in (("pan", pan), ("ms_lr", ms_lr), ("noise", noise)):
            if not np.isfinite(array).all():
                raise BadInput(f"{name} contains NaN or infinite values: mask or fill nodata before sharpening")

    def _pad(self, pan, lms, ms, noise):
        """Reflect-pad bottom/right so the PAN size is a multiple the network and the ratio both divide."""
        multiple = math.lcm(NETWORK_SIZE_MULTIPLE, self.ratio)
        pad_h, pad_w = (-pan.shape[-2]) % multiple, (-pan.shape[-1]) % multiple
        if pad_h == 0 and pad_w == 0:
            return pan, lms, ms, noise

        def reflect(x, ph, pw):
            return torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")

        r = self.ratio
        return (reflect(pan, pad_h, pad_w), reflect(lms, pad_h, pad_w), reflect(ms, pad_h // r, pad_w // r),
                reflect(noise, pad_h, pad_w))

