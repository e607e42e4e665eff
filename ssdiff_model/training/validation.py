"""Validation of a training run: DDIM samples of held-out examples scored at reduced resolution.

Pure torch and numpy (no Ray): the Ray Train job calls it on rank 0 with the EMA weights.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["validate"]


def validate(net, diffusion, data: dict[str, np.ndarray], sources: list[dict[str, Any]], ratio: int, steps: int,
             seed: int = 0, batch_size: int = 8, band_equalization: bool = False,
             loss: bool = True, back_projection: int = 0, sensor: str | None = None,
             ensemble: int = 1) -> dict[str, float]:
    """Validation loss and mean SAM / ERGAS / Q2n (and SCC, Q) of DDIM samples of `net` on validation examples.

    With `band_equalization` the examples come band-equalized (`TrainingStore.load(equalize_bands=True)`): the
    samples are clipped where the scene's valid images lie and scored back in the scene's units.

    Args:
        net: the network to sample (its parameters tell the device).
        diffusion: its diffusion.
        data: the examples, pan, ms, lms, hrms and scene_index (and band_gain, band_mean when band-equalized).
        sources: the store's sources (their full scale and bits), indexed by scene_index.
        ratio: PAN / MS ratio.
        steps: DDIM sampling steps.
        seed: the validation loss's timesteps and noise, and the samples' starting noise.
        batch_size: examples per network call.
        band_equalization: the examples are band-equalized.
        loss: also the validation loss (one more network call per batch).
        back_projection: iterations of back-projection of each sample onto its MS before it is scored, as the
            pipeline sharpens (``ssdiff_model.science.back_projection``).
        sensor: whose MTF the back-projection uses (None: the toolbox's generic one).
        ensemble: dihedral views averaged per sample (``ssdiff_model.model.dihedral.self_ensemble``), as the
            pipeline sharpens.

    Returns:
        ``{"val_loss", "val_<index>"..., "val_examples"}`` (``val_loss`` only with `loss`); empty without examples.
    """
    import torch

    from ssdiff_model.model.dihedral import self_ensemble
    from ssdiff_model.science.back_projection import back_project
    from ssdiff_model.science.equalization import equalize_bands, restore_bands
    from ssdiff_model.science.metrics import index_scale, reduced_resolution
    from ssdiff_model.training.loop import evaluation_loss

    device = next(net.parameters()).device
    n = len(data["pan"])
    if n == 0:
        return {}
    tensors = {k: torch.from_numpy(data[k]).to(device) for k in ("pan", "ms", "lms", "hrms")}
    batches = [{k: v[i:i + batch_size] for k, v in tensors.items()} for i in range(0, n, batch_size)]
    out = {"val_loss": evaluation_loss(net, diffusion, batches, seed=seed)} if loss else {}
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(tuple(tensors["lms"].shape), generator=generator).to(device)
    bands = (data["band_gain"][:, :, None, None], data["band_mean"][:, :, None, None]) if band_equalization else None
    fused = []
    net.eval()   # batch norms on their running statistics, as at inference
    with torch.no_grad():
        for i, batch in zip(range(0, n, batch_size), batches):
            bounds = (0.0, 1.0)
            if bands:
                part = [b[i:i + batch_size] for b in bands]
                bounds = tuple(torch.from_numpy(equalize_bands(np.float32(v), *part)).to(device) for v in (0, 1))

            def sample(pan, lms, ms, start, bounds=bounds):
                return diffusion.ddim_sample(net, pan, lms, ms, steps=steps, noise=start, bounds=bounds)

            inputs = (batch["pan"], batch["lms"], batch["ms"], noise[i:i + batch_size])
            fused.append(self_ensemble(sample, inputs, ensemble).float().cpu().numpy())
    fused = np.concatenate(fused)
    reference, ms = data["hrms"], data["ms"]
    if bands:
        fused, reference, ms = (restore_bands(a, *bands) for a in (fused, reference, ms))
    if back_projection:
        fused = np.stack([np.clip(back_project(f, m, ratio, sensor, back_projection), 0, 1)
                          for f, m in zip(fused, ms)])
    scores: dict[str, list[float]] = {}
    for k in range(n):
        source = sources[int(data["scene_index"][k])]
        bits, to_dn = index_scale(source.get("bits"), float(source["full_scale"]))
        scale = float(source["full_scale"]) * to_dn   # the examples are DN / full scale
        indexes = reduced_resolution(fused[k] * scale, reference[k] * scale, ratio, bits)
        for name, value in indexes.items():
            scores.setdefault(name, []).append(float(value))
    out.update({f"val_{name}": float(np.nanmean(values)) for name, values in scores.items()})
    out["val_examples"] = n
    return out
