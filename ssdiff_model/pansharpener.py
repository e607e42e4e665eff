"""The public model API: load a checkpoint, sharpen PAN + MS arrays given in digital numbers (DN).

    sharpener = Pansharpener.from_checkpoint("ssdiff-8band-r4")
    hrms = sharpener.sharpen(pan, ms_lr, seed=0)     # (B, H, W) float32 DN; steps: the checkpoint's recommendation

``sharpen_tiles`` is the batch entry point of the tiling and Ray code: it takes a stack of equally sized
tiles and the starting noise of each (the caller derives it from global pixel positions, so overlapping
tiles see the same noise) and, for a checkpoint trained on equalized PANs (or MS bands), the equalization of the
whole scene.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssdiff_model.checkpoint import Checkpoint, load_checkpoint, resolve_sampling
from ssdiff_model.diffusion import GaussianDiffusion
from ssdiff_model.equalization import PanEqualization, pan_equalization
from ssdiff_model.lora import add_lora, merge_lora
from ssdiff_model.network import build_network
from ssdiff_model.resample import upsample_ms

# The network's U-shape has three scales, so its PAN-size input must halve twice.
NETWORK_SIZE_MULTIPLE = 4


def network_from_checkpoint(ckpt: Checkpoint, ema: bool = True) -> SSDiffNet:
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
            raise ValueError(f"{len(self.band_names)} band names given for a {self.bands}-band network")

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

    def adapted(self, pan: np.ndarray, ms_lr: np.ndarray, iterations: int = 60, seed: int = 0,
                full_scale: float | None = None, sensor: str | None = None, **settings: Any) -> "Pansharpener":
        """A new Pansharpener fine-tuned on this scene at reduced resolution (target-adaptive L-BAF, see
        ``ssdiff_model.adaptation``); this one is left unchanged. The same seed gives the same weights.

        Args:
            pan, ms_lr: the scene in DN, (H, W) and (B, H/r, W/r).
            iterations: L-BAF steps on the scene.
            seed: timesteps, noise, batches and augmentation of the fine-tune.
            full_scale: the scene's full scale in DN (default the checkpoint's).
            sensor: the scene's sensor for Wald's MTF filters (default the checkpoint's).
            settings: further ``AdaptationConfig`` fields (lr, every, batch_size, stride).

        Returns:
            The adapted Pansharpener; its ``checkpoint`` records the base's hash and the settings.
        """
        from ssdiff_model.adaptation import AdaptationConfig, adapt_checkpoint

        config = AdaptationConfig(iterations=iterations, seed=seed, **settings)
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
        return "interp23tap" if self.ratio & (self.ratio - 1) == 0 else "bicubic"

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

    def sharpen(self, pan: np.ndarray, ms_lr: np.ndarray, steps: int | None = None, seed: int = 0,
                full_scale: float | None = None, sampler: str | None = None) -> np.ndarray:
        """PAN (H, W) and MS (B, H/r, W/r) in DN -> sharpened MS (B, H, W) float32 DN in [0, full_scale].

        `full_scale`: the DN that means 1.0 for these images (the scene's bit depth); training divided every scene
        by its own full scale, so a scene of another bit depth than the checkpoint's default passes its own.
        A checkpoint trained on equalized PANs (bands) equalizes these with the statistics of these arrays.
        `steps` and `sampler` left None: the checkpoint's recommendation, else the project's default
        (``ssdiff_model.checkpoint.resolve_sampling``)."""
        pan, ms_lr = np.asarray(pan), np.asarray(ms_lr)
        if pan.ndim != 2 or ms_lr.ndim != 3:
            raise ValueError(f"sharpen expects pan (H, W) and ms_lr (B, h, w), got pan {pan.shape} "
                             f"and ms_lr {ms_lr.shape}")
        settings, _ = resolve_sampling(self.checkpoint, steps=steps, sampler=sampler)
        steps, sampler = settings["steps"], settings["sampler"]
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((1, ms_lr.shape[0], *pan.shape), generator=generator).numpy()
        equalization = pan_equalization(pan, ms_lr, self.ratio) if self.equalizes else None
        return self.sharpen_tiles(pan[None], ms_lr[None], noise, steps=steps, full_scale=full_scale,
                                  equalization=equalization, sampler=sampler)[0]

    def sharpen_tiles(self, pan: np.ndarray, ms_lr: np.ndarray, noise: np.ndarray, steps: int = 10,
                      full_scale: float | None = None, equalization: PanEqualization | None = None,
                      sampler: str = "consistent", lms: np.ndarray | None = None) -> np.ndarray:
        """N tiles: pan (N, H, W), ms_lr (N, B, h, w) in DN, noise (N, B, H, W) -> (N, B, H, W) float32 DN.

        Args:
            equalization: the equalization of the scene the tiles come from (``pan_equalization`` over the whole
                scene), required by a checkpoint trained on equalized PANs or bands and unused by others.
            sampler: "consistent" or "release" (``GaussianDiffusion.ddim_sample``).
            lms: (N, B, H, W) DN, the MS already upsampled to the PAN grid (a PanCollection file's ``lms``);
                default: upsampled here with the toolbox's interpolator.
        """
        pan, ms_lr, noise = np.asarray(pan), np.asarray(ms_lr), np.asarray(noise)
        self._check(pan, ms_lr, noise)
        if lms is not None and np.shape(lms) != noise.shape:
            raise ValueError(f"lms has shape {np.shape(lms)}, expected {noise.shape} (the tiles' MS on the PAN grid)")
        if lms is not None and self.equalizes_bands:
            raise ValueError(f"checkpoint {self.source} equalizes the MS bands: it upsamples them itself, pass no lms")
        scale = float(full_scale or self.full_scale)
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"full scale must be a positive number of DN, got {full_scale}")
        if self.equalizes and equalization is None:
            what = "MS bands" if self.equalizes_bands else "PANs"
            raise ValueError(f"checkpoint {self.source} was trained on {what} equalized to their scene: pass the "
                             f"scene's equalization (ssdiff_model.equalization.pan_equalization of the whole "
                             f"PAN and MS)")
        if self.equalizes_pan:
            pan = equalization.apply(pan.astype(np.float32))
        bounds = (0.0, 1.0)
        if self.equalizes_bands:
            ms_lr = equalization.apply_bands(ms_lr.astype(np.float32))
            # a valid image lies between the images of 0 and of the full scale
            limits = (equalization.apply_bands(np.full((self.bands, 1, 1), dn, np.float32)) / scale for dn in (0, scale))
            bounds = tuple(torch.from_numpy(limit[None]).to(self.device) for limit in limits)
        if lms is None:
            lms = np.stack([upsample_ms(tile, self.ratio, self._upsampling) for tile in ms_lr.astype(np.float64)])
        tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device) for a in
                   (pan[:, None] / scale, lms / scale, ms_lr / scale, noise)]
        pan_t, lms_t, ms_t, noise_t = self._pad(*tensors)
        with torch.inference_mode():
            image = self.diffusion.ddim_sample(self.net, pan_t, lms_t, ms_t, steps=steps, noise=noise_t,
                                               bounds=bounds, sampler=sampler)
        height, width = pan.shape[-2:]
        hrms = image[..., :height, :width].float().cpu().numpy() * scale
        if self.equalizes_bands:
            hrms = equalization.invert_bands(hrms)
        return np.clip(hrms, 0, scale).astype(np.float32)

    # ---- helpers -----------------------------------------------------------------------------------

    def _check(self, pan: np.ndarray, ms_lr: np.ndarray, noise: np.ndarray) -> None:
        if pan.ndim != 3 or ms_lr.ndim != 4 or noise.ndim != 4:
            raise ValueError(f"sharpen_tiles expects pan (N, H, W), ms_lr (N, B, h, w), noise (N, B, H, W); "
                             f"got {pan.shape}, {ms_lr.shape}, {noise.shape}")
        if ms_lr.shape[1] != self.bands:
            raise ValueError(f"MS has {ms_lr.shape[1]} bands but checkpoint {self.source} expects {self.bands} "
                             f"({', '.join(self.band_names)})")
        if pan.shape[0] != ms_lr.shape[0]:
            raise ValueError(f"{pan.shape[0]} PAN tiles but {ms_lr.shape[0]} MS tiles")
        height, width = pan.shape[-2:]
        ms_h, ms_w = ms_lr.shape[2:]
        if (height, width) != (ms_h * self.ratio, ms_w * self.ratio):
            raise ValueError(f"PAN is {height}x{width} and MS {ms_h}x{ms_w}, but checkpoint {self.source} expects "
                             f"ratio {self.ratio}: PAN {ms_h * self.ratio}x{ms_w * self.ratio} for this MS")
        if noise.shape != (pan.shape[0], self.bands, height, width):
            raise ValueError(f"noise has shape {noise.shape}, expected {(pan.shape[0], self.bands, height, width)}")
        for name, array in (("pan", pan), ("ms_lr", ms_lr), ("noise", noise)):
            if not np.isfinite(array).all():
                raise ValueError(f"{name} contains NaN or infinite values: mask or fill nodata before sharpening")

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
