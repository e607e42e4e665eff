"""Markdown model cards: the one of a checkpoint exported from a training run, and the pieces that the card of an
imported release checkpoint (``ssdiff_model.model.release.release_model_card``) shares with it.

A card records names, not paths of the machine that wrote it (``portable_name``).
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from ssdiff_model.model.checkpoint import Checkpoint

__all__ = ["heading", "portable_name", "sensor_line", "training_model_card", "use_section"]


def portable_name(path: str | Path | None) -> str | None:
    """What a model card or an exported checkpoint records of a path: its last part (a store's or checkpoint's file
    name, a URI's last part), and for the one-file checkpoint inside a Ray Train checkpoint folder
    ``<run>/<checkpoint folder>/<file>``, so that it says which run and step it was.

    Args:
        path: a local path or a URI (None: None).

    Returns:
        The name, relative to nothing of the machine that wrote it.
    """
    if path is None:
        return None
    parts = PurePosixPath(str(path).split("://", 1)[-1].rstrip("/")).parts
    if len(parts) >= 3 and parts[-2].startswith("checkpoint_"):
        return "/".join(parts[-3:])
    return parts[-1] if parts else str(path)


def heading(filename: str, description: str) -> list[str]:
    """A card's title (the file's stem) and its first paragraph."""
    return [f"# {Path(filename).stem}", "", description, ""]


def use_section(from_checkpoint_arguments: str, sharpen_line: str) -> list[str]:
    """The card's "Use" section: load with ``Pansharpener.from_checkpoint(<arguments>``, then `sharpen_line`."""
    return ["## Use", "",
            "```python", "from ssdiff_model.inference.pansharpener import Pansharpener",
            f"sharpener = Pansharpener.from_checkpoint({from_checkpoint_arguments}", sharpen_line, "```", ""]


def sensor_line(ckpt: Checkpoint, bands: Any) -> str:
    """The card's sensor, bands and ratio line."""
    return f"- sensor: {ckpt.sensor}; {bands} bands ({', '.join(ckpt.band_names)}), ratio {ckpt.ratio}"


def _recommended_sampling(training: dict) -> list[str]:
    """The card's line for ``training["sampling_defaults"]`` (bench/steps_halo.py measures what to put there)."""
    recommended = training.get("sampling_defaults")
    if not recommended:
        return ["- recommended sampling: none recorded (the pipeline uses 10 DDIM steps, halo 16, sampler consistent, "
                "no back-projection, one view)"]
    return [f"- recommended sampling: {recommended['steps']} DDIM steps, halo {recommended['halo']}, sampler "
            f"{recommended['sampler']}, back-projection {recommended.get('back_projection', 0)}, self-ensemble "
            f"{recommended.get('ensemble', 1)} "
            "(`training['sampling_defaults']`: what the pipeline uses when the user gives none)"]


def training_model_card(ckpt: Checkpoint, digest: str, filename: str) -> str:
    """The Markdown model card of a checkpoint exported from a training run.

    Args:
        ckpt: the exported checkpoint (its ``training`` facts: iterations, L-BAF, store, validation, ...).
        digest: its content hash.
        filename: the checkpoint file's name (the card's title and the name users load it by).

    Returns:
        The card's text. It names the training store and the base checkpoint by ``portable_name``, never by a path
        of the machine that trained it.
    """
    t = ckpt.training
    job = t.get("job", {})
    store = t.get("store", {})
    val = job.get("validation") or {}
    lines = [
        *heading(filename, f"SSDiff pansharpening checkpoint `{filename}` (sha256 of contents `{digest}`)."),
        *use_section(f"{Path(filename).stem!r})   # once shipped; else the file's path",
                     "hrms = sharpener.sharpen(pan, ms_lr, seed=0)   # DN in, DN out; steps: the recommendation "
                     "below, else 10"),
        "## Data conventions", "",
        sensor_line(ckpt, ckpt.config["bands"]),
        "- the network sees DN divided by the scene's own full scale, as in training (the pipeline takes it from the "
        "scene store; `sharpen` infers it from the arrays' dtype and values, or takes `full_scale=`); "
        f"{ckpt.full_scale:g} DN, the training store's dominant full scale, stands for the sensor's nominal one",
        "- PAN equalization: " + ("the PAN is fed scaled to its scene's MS intensity "
                                  "(`ssdiff_model.science.equalization`; the pipeline records each scene's in its "
                                  "stores)" if t.get("pan_equalization") else "none (raw PAN DN)"),
        "- band equalization: " + ("each MS band's contrast divided by its slope on the equalized PAN of its scene, "
                                   "and the output scaled back (`ssdiff_model.science.equalization`)"
                                   if t.get("band_equalization") else "none"),
        f"- augmentation: {t.get('augmentation') or 'none'}"
        + (f"; every MS band scaled by a random gain in [1/{t['band_gains']:g}, {t['band_gains']:g}]"
           if t.get("band_gains") else ""),
        f"- network: {ckpt.config.get('architecture', 'legacy')} architecture, width {ckpt.config['width']}, "
        f"head size {ckpt.config['head_dim']}; "
        f"weights stored as {'float16' if t.get('exported_half') else 'float32'}, EMA weights for sampling",
        *_recommended_sampling(t), "",
        "## Training", "",
        f"- iterations: {t.get('iterations')} (batch {job.get('batch_size_per_worker')} per worker x "
        f"{job.get('world_size')} workers), EMA decay {t.get('ema_decay')}"
        + (f" over {t['ema_iterations']} iterations (the base's too)"
           if t.get("ema_iterations", t.get("iterations")) != t.get("iterations") else ""),
        f"- L-BAF: {t.get('lbaf') or 'not used'}; phase at the last iteration: {t.get('lbaf_phase') or 'all'}",
        f"- LoRA: {t.get('lora_merged') or t.get('lora') or 'not used'}"
        f"{' (merged into the weights)' if t.get('lora_merged') else ''}",
        f"- fine-tuned from: {job.get('finetuned_from') or 'trained from scratch'}",
        f"- hardware: {job.get('hardware')}; wall time {job.get('wall_time_s')} s; run {job.get('run_name')}",
        f"- training store: {portable_name(store.get('path'))} (family {store.get('family')}, "
        f"{store.get('counts')} patches of {store.get('patch_size')} px, stride {store.get('stride')}; "
        "split by scene)", "",
        "## Validation (held-out scenes, reduced resolution, DDIM samples with the EMA weights)", "",
    ]
    if val:
        lines += ["| index | value |", "|---|---|"]
        lines += [f"| {k.removeprefix('val_')} | {v:.4f} |" for k, v in val.items() if isinstance(v, float)]
    else:
        lines.append("No validation split.")
    lines += ["", "## Data sources", "", "| scene | split | patches | sensor | protocol |", "|---|---|---|---|---|"]
    for s in store.get("sources", []):
        lines.append(f"| {s['id']} | {s['split']} | {s['patches']} | {s['sensor']} | {s['protocol']} |")
    if not store.get("sources"):
        lines += [f"| {s} | | | | |" for s in t.get("data_sources", [])]
    lines += ["", "Each source keeps its owner's terms (see the data's MANIFEST); check them before redistributing "
              "this checkpoint.", ""]
    return "\n".join(lines)
