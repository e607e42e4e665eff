"""One-file model checkpoints with a content hash.

A checkpoint is a plain dict written with ``torch.save`` and read back with ``weights_only=True`` (tensors,
str, int, float, bool, None, lists, tuples and dicts only, so loading never runs pickled code). It holds the
raw and EMA weights, the network config, the data conventions a user must respect (full scale in DN,
sensor, band names, ratio), facts about the training, optionally the state needed to resume training,
and a sha256 over a canonical serialisation of all of that, verified on every load.

Bare names such as ``"ssdiff-8band-r4"`` resolve to ``ssdiff_model/model/checkpoints/<name>.pt``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssdiff_model.errors import BadInput

__all__ = ["Checkpoint", "FORMAT_VERSION", "SHIPPED_DIR", "content_hash", "load_checkpoint", "resolve_checkpoint",
           "save_checkpoint", "save_untrained", "shipped_names"]

FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"


@dataclass
class Checkpoint:
    config: dict[str, Any]                    # network.build_network(config) rebuilds the network
    weights: dict[str, Tensor]                # raw (last optimiser step) weights
    ema_weights: dict[str, Tensor] | None     # EMA weights, the ones to sample with
    full_scale: float                         # DN that maps to 1.0 (2047 for 11-bit data)
    sensor: str
    band_names: list[str]
    ratio: int
    training: dict[str, Any] = field(default_factory=dict)  # facts: data_sources, iterations, lbaf_phase, lora
    train_state: dict[str, Any] | None = None  # optimizer, EMA bookkeeping, rng, step: only to resume
    format_version: int = FORMAT_VERSION
    content_hash: str = ""                     # filled by save_checkpoint / verified by load_checkpoint


def _feed(h: "hashlib._Hash", value: Any) -> None:
    """Canonical, type-tagged serialisation: dict keys sorted, tensors as dtype + shape + raw bytes."""
    if isinstance(value, Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, key)
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"(" if isinstance(value, tuple) else b"[")
        for item in value:
            _feed(h, item)
        h.update(b"]")
    elif value is None or isinstance(value, (bool, int, float, str)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint (plain types and tensors only)")


def _as_dict(ckpt: Checkpoint) -> dict[str, Any]:
    """Shallow (dataclasses.asdict would deep-copy every tensor)."""
    return {f.name: getattr(ckpt, f.name) for f in fields(ckpt)}


def content_hash(ckpt: Checkpoint) -> str:
    payload = _as_dict(ckpt)
    payload.pop("content_hash")
    h = hashlib.sha256()
    _feed(h, payload)
    return h.hexdigest()


def shipped_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.pt")) if SHIPPED_DIR.is_dir() else []


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """A path to an existing file, or a bare name looked up among the checkpoints shipped in the package."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    is_bare_name = isinstance(path_or_name, str) and "/" not in path_or_name and path.suffix != ".pt"
    if is_bare_name and (SHIPPED_DIR / f"{path_or_name}.pt").is_file():
        return SHIPPED_DIR / f"{path_or_name}.pt"
    names = shipped_names()
    raise FileNotFoundError(
        f"checkpoint {str(path_or_name)!r} not found: not an existing file, and not among the shipped "
        f"checkpoints in {SHIPPED_DIR} ({', '.join(names) if names else 'none shipped'})")


def _halved(weights: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
    if weights is None:
        return None
    return {k: v.half() if v.dtype == torch.float32 else v for k, v in weights.items()}


def save_checkpoint(ckpt: Checkpoint, path: str | Path, half: bool = False) -> str:
    """Write `ckpt` to `path` (weights as float16 when `half`, for small shipped files); return its hash.

    With half=False the round trip is bit-exact. Weights are copied to CPU so a GPU run saves the same file.
    """
    def on_cpu(weights: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
        return None if weights is None else {k: v.detach().cpu().clone() for k, v in weights.items()}

    stored = Checkpoint(**{**_as_dict(ckpt), "weights": on_cpu(ckpt.weights),
                           "ema_weights": on_cpu(ckpt.ema_weights), "format_version": FORMAT_VERSION})
    if half:
        stored.weights, stored.ema_weights = _halved(stored.weights), _halved(stored.ema_weights)
    stored.content_hash = content_hash(stored)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(_as_dict(stored), tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a truncated checkpoint behind
    return stored.content_hash


def load_checkpoint(path_or_name: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and verify a checkpoint. Float16-stored weights come back as float16 (load_state_dict upcasts)."""
    path = resolve_checkpoint(path_or_name)
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors come in many types; name the file whatever the cause
        raise BadInput(f"{path}: not a readable checkpoint ({err})") from err
    if not isinstance(raw, dict) or raw.get("format_version") != FORMAT_VERSION:
        found = raw.get("format_version") if isinstance(raw, dict) else type(raw).__name__
        raise BadInput(f"{path}: unsupported checkpoint format {found!r}, expected version {FORMAT_VERSION}")
    try:
        ckpt = Checkpoint(**raw)
    except TypeError as err:
        raise BadInput(f"{path}: malformed checkpoint ({err})") from err
    actual = content_hash(ckpt)
    if actual != ckpt.content_hash:
        raise BadInput(f"{path}: content hash mismatch (stored {ckpt.content_hash[:16]}..., computed "
                         f"{actual[:16]}...): the file was modified or corrupted")
    return ckpt


def save_untrained(path: str | Path, *, bands: int, ratio: int, full_scale: float, sensor: str,
                   band_names: list[str], seed: int = 0, **network: Any) -> Path:
    """A randomly initialised SSDiff (seeded: the same weights every time) saved as a real checkpoint, for tests
    and benchmarks that exercise or time the machinery, never the quality. `network`: SSDiffNet options.

    Every parameter is then moved by N(0, 0.02), as the release's reference weights are: the release initialises
    its stems' last convs to zero, and a network whose output ignores x_t and the PAN would hide the sampler and
    the PAN path from the tests."""
    from ssdiff_model.model.network import build_network  # the network module only when a model is built

    torch.manual_seed(seed)
    net = build_network(dict(bands=bands, ratio=ratio, **{"architecture": "release", **network}))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    save_checkpoint(Checkpoint(config=net.config, weights=net.state_dict(), ema_weights=None, full_scale=full_scale,
                               sensor=sensor, band_names=list(band_names), ratio=ratio), path)
    return Path(path)
