"""The settings of a training run, each written once: its field, default, rule, help text and command-line flag.

``TrainConfig`` holds what the training itself needs (model of a fresh run, optimisation, L-BAF or LoRA, how the
examples are fed, checkpoint and validation cadence, what the checkpoint records). ``setting`` puts a field's flag
and help text in its ``dataclasses.field`` metadata, and ``add_arguments`` builds the argparse options of any such
dataclass from them, so a new setting is one line. ``infra.training.config.TrainJobConfig`` holds the settings of the
Ray Train job around it the same way.

This module imports no torch: the ``ssdiff`` command line builds its parser from it.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from ssdiff_model.errors import BadInput

__all__ = ["NOMINAL_FULL_SCALE", "Setting", "TrainConfig", "add_arguments", "from_namespace", "merge_settings",
           "setting", "settings_of"]

NOMINAL_FULL_SCALE = 2047.0   # what a checkpoint declares when no full scale is given (11-bit DN)

Branch = Literal["spatial", "spectral"]


def setting(default: Any = dataclasses.MISSING, *, flag: str | None = None, help: str | None = None,
            after: str | None = None, implies: tuple[str, ...] = (), **argparse_kwargs: Any) -> Any:
    """A dataclass field that may be a command-line option.

    Args:
        default: the field's default (none: the option is required).
        flag: the option, e.g. ``"--steps"`` (None: not on the command line).
        help: the option's help text.
        after: place the option after that of this (other) field in a parser built from several dataclasses;
            the fields that follow it come after it too.
        implies: boolean fields that this boolean option switches on as well.
        argparse_kwargs: further ``add_argument`` arguments (choices, metavar, action, const).

    Returns:
        The ``dataclasses.field``.
    """
    metadata = {"flag": flag, "help": help, "after": after, "implies": tuple(implies),
                "argparse": argparse_kwargs} if flag else {}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Setting:
    """One field of a settings dataclass that has a command-line option: its name, type and field."""
    name: str
    type: Any
    field: dataclasses.Field

    @property
    def flag(self) -> str:
        return self.field.metadata["flag"]


def settings_of(cls: type) -> list[Setting]:
    """The fields of dataclass `cls` that have a command-line option, in field order.

    Args:
        cls: a dataclass whose fields were declared with ``setting``.

    Returns:
        One ``Setting`` per field with a flag.
    """
    hints = typing.get_type_hints(cls)
    return [Setting(f.name, hints[f.name], f) for f in dataclasses.fields(cls) if f.metadata.get("flag")]


def merge_settings(base: list[Setting], more: list[Setting]) -> list[Setting]:
    """`base` with `more` placed in it: a setting of `more` whose metadata says ``after=<name>`` goes after that
    setting, the ones after it in `more` follow it, and those before any ``after`` go first.

    Args:
        base: settings in their order.
        more: settings to place in it.

    Returns:
        The merged list (the order of a parser's options and of its help).
    """
    merged = list(base)
    position = 0
    for item in more:
        after = item.field.metadata["after"]
        if after:
            position = [s.name for s in merged].index(after) + 1
        merged.insert(position, item)
        position += 1
    return merged


def _value_type(hint: Any) -> Any:
    """int for ``int | None``: the type argparse converts the option's text with."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


class _StoreTrueImplying(argparse.Action):
    """``store_true`` that also sets the boolean fields it implies."""

    def __init__(self, option_strings, dest, implies=(), default=False, required=False, help=None):
        super().__init__(option_strings, dest, nargs=0, const=True, default=default, required=required, help=help)
        self.implies = tuple(implies)

    def __call__(self, parser, namespace, values, option_string=None):
        for name in (self.dest, *self.implies):
            setattr(namespace, name, True)


def add_arguments(parser: argparse.ArgumentParser, settings: Iterable[Setting],
                  overrides: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Add one option per setting to `parser`; the option's value lands in the attribute named as the field.

    Args:
        parser: the parser (or subparser) to extend.
        settings: what ``settings_of`` returns (of one dataclass, or merged by ``after``).
        overrides: per field name, ``add_argument`` arguments that replace the declared ones (a command whose
            default differs, e.g. ``{"lbaf_start": {"default": 0}}``).
    """
    overrides = overrides or {}
    for item in settings:
        meta = item.field.metadata
        kwargs: dict[str, Any] = {"dest": item.name, "help": meta["help"], **meta["argparse"]}
        if item.field.default is dataclasses.MISSING and item.field.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = item.field.default
        if item.type is bool:
            kwargs["action"] = _StoreTrueImplying
            if meta["implies"]:
                kwargs["implies"] = meta["implies"]
        elif kwargs.get("action") is None:
            kwargs["type"] = _value_type(item.type)
        if kwargs.get("action") is None and "choices" not in kwargs:
            kwargs.setdefault("metavar", item.flag.lstrip("-").replace("-", "_").upper())
        kwargs.update(overrides.get(item.name, {}))
        if kwargs.get("required"):
            kwargs.pop("default", None)
        parser.add_argument(item.flag, **kwargs)


def from_namespace(cls: type, args: argparse.Namespace, **values: Any) -> dict[str, Any]:
    """The keyword arguments of `cls` that parsed options (and `values`) give.

    Args:
        cls: a dataclass declared with ``setting``.
        args: what the parser built by ``add_arguments`` returned.
        values: further fields (they win over the options).

    Returns:
        ``{field name: value}`` for every field with a flag, and `values`.
    """
    return {**{item.name: getattr(args, item.name) for item in settings_of(cls)}, **values}


@dataclass
class TrainConfig:
    """The settings of a training run (single process or the Ray Train job).

    Its fields (``dataclasses.asdict``) are recorded in resumable checkpoints (``train_state["config"]``), and a
    resumed run rebuilds its config from them, so a field's name stays once written.
    """
    # ---- optimisation and the model of a fresh run
    # total iterations of this run (a resumed run continues up to it); the flag is --steps, as it always was
    iterations: int = setting(1000, flag="--steps", help="total iterations (default 1000)")
    batch_size: int = setting(16, flag="--batch-size", help="examples per worker per step (default 16)")
    lr: float = setting(1e-3, flag="--lr")
    width: int = setting(32, flag="--width", help="network width of a fresh model (default 32)")
    head_dim: int = 16
    architecture: str = setting("release", flag="--architecture", choices=("release", "legacy"),
                                help="network of a fresh model: the authors' released SSDiff (default) or the "
                                     "project's first layout (only to compare with checkpoints trained on it)")
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    # Iterations the starting weights were already averaged over (a fine-tune's base): the EMA goes on at the decay
    # the base had reached instead of warming up again, which would leave it an average of its last few dozen steps.
    ema_warmup_from: int = 0
    grad_clip: float | None = 1.0
    # False: every batch norm keeps the running statistics it starts with (a fine-tune on a handful of patches of
    # one scene would otherwise replace the statistics of the whole training set by those patches').
    update_norm_statistics: bool = True
    seed: int = setting(0, flag="--seed")      # timesteps, diffusion noise and batches
    # ---- L-BAF (branch-wise alternative fine-tuning) or LoRA
    lbaf_start: int | None = setting(None, flag="--lbaf-start",     # None: no L-BAF
                                     help="iteration at which L-BAF starts (default: none)")
    lbaf_every: int = setting(1000, flag="--lbaf-every", help="iterations per L-BAF branch phase")
    lbaf_lr: float = setting(1e-4, flag="--lbaf-lr")
    lbaf_first: Branch = "spatial"
    lora_rank: int | None = setting(None, flag="--lora-rank",
                                    help="LoRA adapters on the APFM projections instead of L-BAF")
    lora_alpha: float = 4.0
    finetune_from: str | None = setting(None, flag="--finetune-from",   # start from this checkpoint's EMA weights
                                        help="checkpoint to start from: a file, a shipped name, or a run's folder "
                                             "(its furthest checkpoint)")
    # ---- checkpoints, validation, logging
    checkpoint_path: str | None = None         # single process: written every `checkpoint_every` steps and at the end
    checkpoint_every: int = setting(500, flag="--checkpoint-every")   # the job: a Ray Train checkpoint
    keep_checkpoints: int = 3
    validate_every: int = setting(1000, flag="--validate-every")
    val_examples: int = setting(8, flag="--val-examples")
    val_steps: int = setting(4, flag="--val-steps", help="DDIM steps of validation samples")
    report_every: int = 1
    log_every: int = 100
    # ---- how the examples are fed, and what the checkpoint must tell its users
    full_scale: float | None = setting(None, flag="--full-scale",   # None: the store's dominant one, else 2047
                                       help="full scale the checkpoint declares (default: the store's)")
    pan_equalization: bool = setting(False, flag="--equalize-pan",  # the PAN fed equalized to its scene
                                     help="feed the PAN equalized to its scene's MS intensity (always on when the "
                                          "base does)")
    band_equalization: bool = setting(False, flag="--equalize-bands", implies=("pan_equalization",),
                                      help="also feed every MS band with its contrast divided by its slope on the "
                                           "equalized PAN of its scene (implies --equalize-pan; always on when the "
                                           "base does)")
    augmentation: str | None = setting(None, flag="--augment", action="store_const", const="dihedral",
                                       help="turn and mirror every training example at random (the 8 elements of "
                                            "the dihedral group)")
    band_gains: float | None = setting(None, flag="--band-gains", metavar="R",
                                       help="scale every MS band of a training example by its own random gain in "
                                            "[1/R, R] (reference too), so the network reads each band's injection "
                                            "gain from the scene")
    sensor: str | None = None                  # None: the store's sensors, else "unknown"
    band_names: list[str] = field(default_factory=list)  # empty: B1..Bn
    data_sources: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.iterations < 1 or self.batch_size < 1:
            raise BadInput(f"iterations (--steps) and batch size must be >= 1, got {self.iterations}, "
                           f"{self.batch_size}")
        if self.width % self.head_dim or self.width % 2:   # the network says so too, but inside a Ray worker
            raise BadInput(f"--width {self.width}: must be even and a multiple of the attention head size "
                           f"{self.head_dim} (16, 32, 48, ...)")
        if self.lbaf_start is not None and self.lora_rank is not None:
            raise BadInput("TrainConfig: choose L-BAF (lbaf_start, --lbaf-start) or LoRA (lora_rank, --lora-rank), "
                           "not both")
        if self.band_equalization and not self.pan_equalization:
            raise BadInput("TrainConfig: band equalization is relative to the equalized PAN: it needs "
                           "pan_equalization")
        if self.band_equalization and self.band_gains:
            raise BadInput("TrainConfig: band gains and band equalization exclude each other: equalized bands "
                           "take each scene's band gains out")
