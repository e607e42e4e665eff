"""A sharpen run's settings as one object, built once from the command line and passed down.

``ssdiff sharpen``, ``ssdiff run`` and ``python -m infra.reprocess`` take the same options: their arguments are
generated here from the fields of ``SharpenSettings`` (``add_arguments``) and read back in one place
(``from_args``). The Prefect flows keep flat, JSON-able parameters (a deployment's parameters are data) and build
the object at their boundary (``SharpenSettings(**parameters)``). Nothing here loads torch, Ray or Zarr.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["SAMPLERS", "SharpenSettings"]

SAMPLERS = ("consistent", "release")


def _option(flag: str | None, help: str, **argparse_kwargs) -> dict[str, Any]:
    """Field metadata: the command-line flag of a setting (None: no flag) and its argparse arguments."""
    return {"flag": flag, "help": help, "argparse": argparse_kwargs}


@dataclass(frozen=True)
class SharpenSettings:
    """How one scene (or an archive of scenes) is sharpened.

    ``steps``, ``halo``, ``sampler``, ``back_projection`` and ``ensemble`` left None are resolved by
    ``ssdiff_model.model.sampling.resolve_sampling`` (the mosaic's own when resuming, else the checkpoint's
    recommendation, else the project's default).
    ``provenance`` adds attributes to the mosaic store (who ran it: a Prefect flow run, a Ray job).
    """
    checkpoint: str | os.PathLike = field(metadata=_option(
        "--checkpoint", "checkpoint file, or the name of a shipped checkpoint", required=True))
    # No argparse defaults for steps, halo and sampler: None lets resolve_sampling take the checkpoint's
    # recommendation (or, resuming, the mosaic's own settings).
    steps: int | None = field(default=None, metadata=_option(
        "--steps", "DDIM sampling steps (default: the checkpoint's recommendation, else 10)", type=int))
    seed: int = field(default=0, metadata=_option(
        "--seed", "seed of the position-keyed noise (default 0)", type=int))
    sampler: str | None = field(default=None, metadata=_option(
        "--sampler", "DDIM as trained (consistent; the default unless the checkpoint recommends otherwise) or as "
                     "the authors' release samples (release: step indices fed as timesteps, image space after the "
                     "first step)", choices=SAMPLERS))
    back_projection: int | None = field(default=None, metadata=_option(
        "--back-projection", "iterations of back-projection onto the MS after sampling (the output degraded by "
                             "the scene's MTF gives its MS back; default: the checkpoint's recommendation, else 0)",
        type=int, metavar="N"))
    ensemble: int | None = field(default=None, metadata=_option(
        "--ensemble", "average each tile over N dihedral views (turned and mirrored, each turned back): 1, 2, 4 or "
                      "8; costs N samplings (default: the checkpoint's recommendation, else 1)",
        type=int, metavar="N"))
    adapt: int = field(default=0, metadata=_option(
        "--adapt", "first fine-tune the checkpoint on this scene for N L-BAF iterations at reduced resolution "
                   "(Wald's protocol on the scene; 12 costs less than sharpening 512 x 512 pixels), checked on a "
                   "held-out part of it: the base's weights are kept unless the check gains 5 % (kept beside the "
                   "mosaic, reused by reruns)", type=int,
        metavar="N"))
    tile_size: int = field(default=64, metadata=_option(
        "--tile", "tile side in PAN pixels (default 64)", type=int, metavar="TILE"))
    halo: int | None = field(default=None, metadata=_option(
        "--halo", "halo in PAN pixels around each tile's core (default: the checkpoint's recommendation, else 16)",
        type=int))
    batch_size: int = field(default=8, metadata=_option(
        "--batch-size", "tiles per network call (default 8)", type=int))
    actors: int | None = field(default=None, metadata=_option(
        "--actors", "Ray actors, one model each (default: one per GPU, else one using every CPU)", type=int))
    max_actors: int | None = field(default=None, metadata=_option(
        "--max-actors", "without --actors, the most actors the pool grows to while the cluster adds GPUs or CPUs "
                        "and queued tiles could use them (default: no limit)", type=int))
    ray_address: str | None = field(default=None, metadata=_option(
        "--ray-address", "Ray cluster to join (default: RAY_ADDRESS, else a local Ray)"))
    progress: bool = field(default=True, metadata=_option(
        "--no-progress", "no progress bar", action="store_false"))
    overwrite: bool = field(default=False, metadata=_option(
        "--overwrite", "replace an existing mosaic made with other settings (once the new store is created); "
                       "without it such a store is refused and a rerun resumes a store of the same settings",
        action="store_true"))
    provenance: Mapping[str, Any] = field(default_factory=dict, metadata=_option(None, ""))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, *, without: Iterable[str] = (),
                      help: Mapping[str, str | None] | None = None) -> None:
        """Add an option for each setting (``--tile`` for ``tile_size``, ``--no-progress`` for ``progress``...).

        Args:
            parser: the (sub)command's parser.
            without: names of settings the command does not offer (they keep their defaults).
            help: help texts replacing the default ones, by setting name (None: no help text).
        """
        for f in dataclasses.fields(cls):
            flag = f.metadata["flag"]
            if flag is None or f.name in without:
                continue
            text = (help or {}).get(f.name, f.metadata["help"])
            default = {} if f.default is dataclasses.MISSING else {"default": f.default}
            parser.add_argument(flag, dest=f.name, **f.metadata["argparse"], **default,
                                **({"help": text} if text else {}))

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> "SharpenSettings":
        """The settings a parsed command line gives (settings it has no option for keep their defaults).

        Args:
            args: what a parser given ``add_arguments`` parsed.
            **overrides: settings given otherwise (``provenance``, a command's own ``progress``).

        Returns:
            The settings.
        """
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        return cls(**{**given, **overrides})

    def parameters(self) -> dict[str, Any]:
        """The settings as flat JSON-able parameters, those of the Prefect flows (``flows.pipeline``) and the
        keyword arguments of ``SharpenSettings`` itself; the provenance is left out: a flow adds its own.

        Returns:
            {setting name: value}, the checkpoint as a string.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "provenance"}
        values["checkpoint"] = str(self.checkpoint)
        return values

    def replace(self, **changes: Any) -> "SharpenSettings":
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)
