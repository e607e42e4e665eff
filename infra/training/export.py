"""The checkpoint users load, exported from a training run with its model card, and the lookup of a run's
furthest checkpoint (to export a stopped run, or to fine-tune from a run's folder)."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from infra.training import CHECKPOINT_FILE
from ssdiff_model.model.model_card import portable_name, training_model_card
from tiling import objstore
from tiling.clock import utc_timestamp

__all__ = ["export_checkpoint", "export_latest", "finetune_source", "latest_checkpoint"]


def export_checkpoint(source: str | Path, out: str | Path, half: bool = False, store=None,
                      facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the checkpoint users load: no training state, LoRA adapters merged, optionally float16 weights, the
    training facts (data sources, iterations, hardware, wall time, validation indexes, L-BAF phase) in `training`;
    and a model card `<out>.md` beside it.

    The facts name the training store, the run's folder and a fine-tune's base by ``portable_name`` (the store's
    file name, the run's name, the base's file name), not by paths of the machine that trained it. The weights are
    those of `source`.

    Args:
        source: the one-file checkpoint of a run (a Ray Train checkpoint's ``model.pt``).
        out: the file to write.
        half: store float16 weights.
        store: the run's ``TrainingStore``, whose facts (family, counts, sources) are recorded.
        facts: more facts for ``training["job"]``.

    Returns:
        {"path", "hash", "model_card", "bytes"}.
    """
    return _export(_load(source), out, half=half, store=store, facts=facts)


def _load(source: str | Path):
    """The checkpoint at `source` (a local file, or an object read through a temporary copy)."""
    from ssdiff_model.model.checkpoint import load_checkpoint

    with objstore.fetched(source) as local:
        return load_checkpoint(local)


def _export(ckpt, out: str | Path, half: bool, store, facts: dict[str, Any] | None) -> dict[str, Any]:
    """``export_checkpoint`` of a checkpoint already read."""
    from ssdiff_model.inference.pansharpener import network_from_checkpoint
    from ssdiff_model.model.checkpoint import save_checkpoint

    training = dict(ckpt.training)
    if training.get("lora"):
        ema = network_from_checkpoint(ckpt, ema=True).state_dict()
        raw = network_from_checkpoint(ckpt, ema=False).state_dict()
        ckpt.weights, ckpt.ema_weights = raw, ema
        training["lora_merged"], training["lora"] = training["lora"], None
    job = dict(training.get("job", {}))
    job.update(facts or {})
    _portable_paths(job)
    training["job"] = job
    if store is not None:
        training["store"] = {"path": portable_name(store.path), "family": store.attrs.get("family"),
                             "counts": store.attrs["counts"],
                             "patch_size": store.attrs["patch_size"], "stride": store.attrs["stride"],
                             "sources": [{k: s[k] for k in ("id", "split", "patches", "sensor", "protocol")}
                                         for s in store.sources]}
    training["exported"] = utc_timestamp()
    training["exported_half"] = bool(half)
    ckpt.training, ckpt.train_state = training, None
    if not objstore.is_url(out):
        out = Path(out)
        digest = save_checkpoint(ckpt, out, half=half)
        card = out.with_suffix(".md")
        card.write_text(training_model_card(ckpt, digest, out.name))
        return {"path": str(out), "hash": digest, "model_card": str(card), "bytes": out.stat().st_size}
    # On object storage: written here first, then one PUT each (an object appears whole or not at all), the
    # checkpoint before its card, so a card never describes a checkpoint that is not there.
    out = objstore.location(out)
    card = objstore.sibling(out, Path(objstore.name(out)).with_suffix(".md").name)
    with tempfile.TemporaryDirectory(prefix="ssdiff-export-") as folder:
        local = Path(folder, objstore.name(out))
        digest = save_checkpoint(ckpt, local, half=half)
        local_card = local.with_suffix(".md")
        local_card.write_text(training_model_card(ckpt, digest, local.name))
        objstore.put_file(local, out)
        objstore.put_file(local_card, card)
        return {"path": out, "hash": digest, "model_card": card, "bytes": local.stat().st_size}


def _portable_paths(job: dict[str, Any]) -> None:
    """The job facts' paths (store, run folder, fine-tune base) as ``portable_name``s, in place."""
    for key in ("store", "run_path"):
        if job.get(key):
            job[key] = portable_name(job[key])
    if isinstance(job.get("finetuned_from"), dict) and job["finetuned_from"].get("path"):
        job["finetuned_from"] = {**job["finetuned_from"], "path": portable_name(job["finetuned_from"]["path"])}


def latest_checkpoint(storage_path: str | Path, name: str) -> Path:
    """The one-file checkpoint of the furthest step among a run's Ray Train checkpoints (for a run that was killed
    or stopped before its last step: export what it reached).

    Args:
        storage_path: the run's Ray Train storage.
        name: the run's name.

    Returns:
        The path of the furthest checkpoint's file.
    """
    run = objstore.join(storage_path, name)
    try:
        # listing refreshes the object store's cached listing: a run resumed since would hide its newer checkpoints
        folders = [entry for entry, is_folder in objstore.listing(run) if is_folder and entry.startswith("checkpoint_")]
    except FileNotFoundError:
        folders = []
    found = [objstore.as_path(objstore.join(run, folder, CHECKPOINT_FILE)) for folder in sorted(folders)]
    found = [path for path in found if objstore.is_file(path)]
    if not found:
        raise FileNotFoundError(f"{run}: no Ray Train checkpoints of run {name!r} there")

    def iterations(path) -> int:
        return _load(path).training.get("iterations") or 0

    return max(found, key=iterations)


def finetune_source(path_or_name: str | Path) -> Path:
    """The checkpoint file to fine-tune from: a file, a shipped name, or a run's folder (storage path / name), which
    means its furthest checkpoint, so a recipe needs no timestamped folder name.

    Args:
        path_or_name: a checkpoint file, a shipped checkpoint's name, or a run's folder.

    Returns:
        The checkpoint file.
    """
    from ssdiff_model.model.checkpoint import resolve_checkpoint

    run = Path(path_or_name)
    return latest_checkpoint(run.parent, run.name) if run.is_dir() else resolve_checkpoint(path_or_name)


def export_latest(storage_path: str | Path, name: str, out: str | Path, half: bool = False) -> dict[str, Any]:
    """Export the run's latest checkpoint with the facts of its training store (when the store is still there).

    Args:
        storage_path: the run's Ray Train storage.
        name: the run's name.
        out: the file to write (its model card goes beside it).
        half: store float16 weights.

    Returns:
        ``export_checkpoint``'s answer and the exported ``"checkpoint"``.
    """
    from tiling.stores.training import TrainingStore

    source = latest_checkpoint(storage_path, name)
    ckpt = _load(source)
    store_path = ckpt.training.get("job", {}).get("store")
    store = TrainingStore(store_path) if store_path and objstore.exists(store_path) else None
    return {"checkpoint": str(source), **_export(ckpt, out, half=half, store=store, facts=None)}
