"""How a run samples: steps, halo, sampler, back-projection and self-ensemble, and the one rule that decides them.

Each setting is the user's, else the one the mosaic being resumed was made with, else the checkpoint's recommendation
(``training["sampling_defaults"]``, measured for it and stated in its model card), else the project's default. This
module imports neither torch nor the network, so ingest, the command line's checks and the stores' attributes can
use it without loading the model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ssdiff_model.errors import BadInput

if TYPE_CHECKING:
    from ssdiff_model.model.checkpoint import Checkpoint

__all__ = ["ENSEMBLE_SIZES", "PROJECT_SAMPLING_DEFAULTS", "SAMPLING_ADDED_LATER", "SAMPLING_KEYS", "recorded_sampling",
           "require_ensemble", "resolve_sampling", "sampling_defaults"]

# How many dihedral views a self-ensemble may average (``ssdiff_model.model.dihedral``): subgroups of the dihedral
# group, so the average is symmetric under the views it takes (1: none; 2: a half turn; 4: the quarter turns; 8: all).
ENSEMBLE_SIZES = (1, 2, 4, 8)

# What a run uses when neither the user nor the checkpoint says: the settings every run used before checkpoints
# carried their own (the release samples 10 DDIM steps; a 16-pixel halo was the pipeline's default; no
# back-projection onto the MS and a single view, which came later: a checkpoint that recommends neither samples as
# it always did).
PROJECT_SAMPLING_DEFAULTS: dict[str, Any] = {"steps": 10, "halo": 16, "sampler": "consistent", "back_projection": 0,
                                             "ensemble": 1}
SAMPLING_KEYS = tuple(PROJECT_SAMPLING_DEFAULTS)
# Settings added after mosaic stores began recording their sampling, with the value every run had before: a store
# that records its steps but not one of these was made with that value (this is the one place that says so).
SAMPLING_ADDED_LATER: dict[str, Any] = {"back_projection": 0, "ensemble": 1}
# Stores written before the release sampler existed call the consistent sampler "ddim".
_SAMPLER_ALIASES = {"ddim": "consistent"}


def sampling_defaults(ckpt: Checkpoint) -> dict[str, Any]:
    """The sampling settings a checkpoint recommends (``training["sampling_defaults"]``, measured for it and stated in
    its model card); {} for a checkpoint that recommends none. A malformed entry is a ValueError, not a silent
    fallback: it would change every run that relies on it."""
    recommended = ckpt.training.get("sampling_defaults") or {}
    if not isinstance(recommended, dict) or set(recommended) - set(SAMPLING_KEYS):
        raise BadInput(f"checkpoint's sampling_defaults {recommended!r}: expected a dict with keys among "
                         f"{SAMPLING_KEYS}")
    _check_sampling(recommended, "checkpoint's sampling_defaults")
    return dict(recommended)


def _check_sampling(values: dict[str, Any], where: str) -> None:
    from ssdiff_model.model.diffusion import SAMPLERS  # the diffusion module (and torch) only when asked

    for key, least in (("steps", 1), ("halo", 0), ("back_projection", 0)):
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise BadInput(f"{where}: {key} must be an integer of at least {least}, got {value!r}")
    if values.get("ensemble") is not None:
        require_ensemble(values["ensemble"], where)
    if values.get("sampler") is not None and values["sampler"] not in SAMPLERS:
        raise BadInput(f"{where}: sampler must be one of {SAMPLERS}, got {values['sampler']!r}")


def require_ensemble(size: Any, where: str) -> int:
    """``size`` if it is a self-ensemble's number of views (``ENSEMBLE_SIZES``; True is not 1), else BadInput naming
    ``where``."""
    if isinstance(size, bool) or size not in ENSEMBLE_SIZES:
        raise BadInput(f"{where}: ensemble must be one of {ENSEMBLE_SIZES} dihedral views, got {size!r}")
    return size


def resolve_sampling(ckpt: Checkpoint | None, *, steps: int | None = None, halo: int | None = None,
                     sampler: str | None = None, back_projection: int | None = None, ensemble: int | None = None,
                     recorded: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The steps, halo, sampler, back-projection and self-ensemble a run uses, and where each came from. The one
    place they are decided: the command line, the flows and the archive reprocessing all come through here.

    Each setting is, in order: the user's (not None); the one the mosaic being resumed was made with (``recorded``,
    its attributes: a rerun finishes a store with its own settings, whatever the checkpoint recommends today); the
    checkpoint's recommendation (``sampling_defaults``); the project's default (``PROJECT_SAMPLING_DEFAULTS``).

    Returns:
        ({"steps", "halo", "sampler", "back_projection", "ensemble"}: values, {same keys: "user" | "mosaic store" |
        "checkpoint" | "project"}).
    """
    given = {"steps": steps, "halo": halo, "sampler": sampler, "back_projection": back_projection,
             "ensemble": ensemble}
    _check_sampling(given, "given")
    stored = recorded_sampling(recorded or {})
    recommended = sampling_defaults(ckpt) if ckpt is not None else {}   # None: a network built in memory
    values, sources = {}, {}
    for key in SAMPLING_KEYS:
        for source, layer in (("user", given), ("mosaic store", stored), ("checkpoint", recommended),
                              ("project", PROJECT_SAMPLING_DEFAULTS)):
            if layer.get(key) is not None:
                values[key], sources[key] = layer[key], source
                break
    return values, sources


def recorded_sampling(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling settings a mosaic store's attributes record (``SAMPLING_KEYS`` present and not None), the legacy
    sampler name read as the sampler it names, and a setting added later (``SAMPLING_ADDED_LATER``) read as the
    value it had when the store records its steps but not that setting."""
    stored = {k: _SAMPLER_ALIASES.get(v, v) if k == "sampler" else v
              for k, v in recorded.items() if k in SAMPLING_KEYS and v is not None}
    if stored.get("steps") is not None:
        stored = {**SAMPLING_ADDED_LATER, **stored}
    return stored
