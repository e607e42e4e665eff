"""The ``ssdiff`` command line.

    ssdiff ingest --pan P --ms M [M ...] [--sensor S] [--nodata V] [--full-scale F] --out scene.zarr
    ssdiff ingest --stac ITEM --pan-asset KEY --ms-asset KEY [KEY ...] [--sensor S] --out scene.zarr
    ssdiff sharpen scene.zarr --out mosaic.zarr --checkpoint C [--steps N] [--seed 0] [--tile 64] [--halo H]
                   [--actors N] [--ray-address ADDR] [--overwrite]
    ssdiff evaluate mosaic.zarr [--reference GT] [--reduced] [--quicklook PNG]
    ssdiff run --pan P --ms M --out mosaic.zarr --checkpoint C [...]      the three as one Prefect flow
    ssdiff export mosaic.zarr --cog OUT.tif [--overwrite] [--nodata V]   a Cloud Optimized GeoTIFF of a mosaic
    ssdiff prepare-training / train / finetune                           see flows/training.py
    ssdiff import-release-checkpoint FILE --bands 8 --sensor WV3 --out NAME.pt   see flows/release_import.py

Each command prints a JSON summary on stdout. Every error is one line ``ssdiff <command>: error: ...`` on
stderr naming the file and the problem, and any store that existed before is left as it was. Exit status:
    0  done
    1  the system refused (disk full, permission denied, read-only or lost file system), or interrupted: fix
       the cause and rerun the same command, it resumes
    2  bad input (unreadable or inconsistent files, a checkpoint that does not fit or fails its hash)
    3  the output store is in use by another run (named in the message)
SIGTERM is handled as Ctrl-C. Warnings (a full scale assumed, a scene cropped, damaged tiles sharpened again) are
lines ``ssdiff <command>: warning: ...`` on stderr, and in the summary's ``warnings``.
Nothing read from a file or the command line is ever evaluated or passed to a shell: paths and names are data.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from infra.failures import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_FAILED  # noqa: F401 - the codes are API
from infra.settings import SharpenSettings
from ssdiff_model.errors import BadInput

__all__ = ["COMMANDS", "EXIT_BAD_INPUT", "EXIT_BUSY", "EXIT_FAILED", "build_parser", "main"]


def _add_scene_inputs(parser: argparse.ArgumentParser, stac: bool = False) -> None:
    files = parser.add_mutually_exclusive_group(required=True) if stac else parser
    files.add_argument("--pan", required=not stac,
                       help="PAN GeoTIFF, or the one .mat / .h5 file that holds the whole scene")
    if stac:
        files.add_argument("--stac", metavar="ITEM",
                           help="STAC Item (JSON file or http(s) URL) whose assets are the PAN and MS files")
        parser.add_argument("--pan-asset", metavar="KEY", help="with --stac: the key of the PAN asset")
        parser.add_argument("--ms-asset", metavar="KEY", nargs="+",
                            help="with --stac: the key of the MS asset, or of single-band MS assets in band order")
    parser.add_argument("--ms", nargs="+", default=[],
                        help="MS GeoTIFF, or single-band MS GeoTIFFs in band order (GeoTIFF scenes); the MS .mat "
                             "of a two-file .mat pair")
    parser.add_argument("--sensor", help="sensor name (WV3, QB, GeoEye1, Landsat8, ...); default: from the files")
    parser.add_argument("--band-names", nargs="+", help="MS band names (GeoTIFF scenes), e.g. blue green red nir")
    parser.add_argument("--nodata", type=float, help="DN value that marks nodata pixels (stored as NaN)")
    parser.add_argument("--example", type=int, help="which example of a PanCollection file to ingest")
    parser.add_argument("--full-scale", type=float,
                        help="the value that means 1.0 (2047 for 11-bit DN, 1.0 for reflectance); default: decided "
                             "from the data type and the data, and said in a warning when it is a guess")


def _add_evaluate_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", help="reference GeoTIFF (MS bands on the PAN grid) to score against")
    parser.add_argument("--reduced", action="store_true",
                        help="also score at reduced resolution (Wald's protocol on the same scene)")
    parser.add_argument("--quicklook", help="PNG to write (default: <mosaic name>.quicklook.png beside the store)")


def _add_export_options(parser: argparse.ArgumentParser) -> None:
    # Defaults and allowed values live in flows.export, imported only when the command runs (GDAL is heavy).
    parser.add_argument("mosaic", help="finished mosaic store written by `ssdiff sharpen`")
    parser.add_argument("--cog", required=True, metavar="OUT.tif", help="Cloud Optimized GeoTIFF to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT.tif")
    parser.add_argument("--nodata", type=float,
                        help="value written and declared for nodata pixels (default: NaN, declared as such)")
    parser.add_argument("--blocksize", type=int, help="internal tile side in pixels, a multiple of 16 (default 512)")
    parser.add_argument("--compress", help="DEFLATE (default: every GDAL reads it), ZSTD, LZW or NONE")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ssdiff-pansharpening")
    except PackageNotFoundError:   # run from a source tree that is not installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssdiff", description="Distributed SSDiff pansharpening.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="validate scene files and write a Zarr scene store")
    _add_scene_inputs(ingest, stac=True)
    ingest.add_argument("--out", required=True, help="scene store to create (e.g. scene.zarr)")

    sharpen = commands.add_parser("sharpen", help="sharpen a scene store into a mosaic store with Ray actors")
    sharpen.add_argument("scene", help="scene store written by `ssdiff ingest`")
    sharpen.add_argument("--out", required=True, help="mosaic store to create or resume (e.g. mosaic.zarr)")
    SharpenSettings.add_arguments(sharpen)

    evaluate = commands.add_parser("evaluate", help="quality indexes and a quicklook PNG of a mosaic")
    evaluate.add_argument("mosaic", help="mosaic store written by `ssdiff sharpen`")
    evaluate.add_argument("--checkpoint", help="checkpoint for --reduced (default: the one the mosaic records)")
    _add_evaluate_options(evaluate)

    run = commands.add_parser("run", help="ingest, sharpen and evaluate in one Prefect flow")
    _add_scene_inputs(run)
    run.add_argument("--out", required=True, help="mosaic store to create or resume")
    run.add_argument("--scene", help="scene store (default: <mosaic name>.scene.zarr beside the mosaic)")
    SharpenSettings.add_arguments(run)
    _add_evaluate_options(run)
    run.add_argument("--prefect-api-url", help="Prefect server to record the run in (default: PREFECT_API_URL, "
                                               "else Prefect's ephemeral local API)")

    export = commands.add_parser("export", help="write a finished mosaic as a Cloud Optimized GeoTIFF")
    _add_export_options(export)

    from flows.release_import import add_import_command
    from flows.training import add_training_commands

    add_training_commands(commands, COMMANDS)
    add_import_command(commands, COMMANDS)
    return parser


def _ingest(args) -> dict:
    if args.stac:
        if args.ms or args.example is not None:
            raise BadInput(f"{args.stac}: with --stac the files are the item's assets: give --pan-asset and "
                             f"--ms-asset, not --ms or --example")
        from flows.stac import ingest_stac

        return ingest_stac(args.stac, args.pan_asset, args.ms_asset or (), args.out, sensor=args.sensor,
                           band_names=args.band_names or (), nodata=args.nodata)
    if args.pan_asset or args.ms_asset:
        raise BadInput(f"{args.pan}: --pan-asset and --ms-asset name the assets of a --stac item")
    from flows.ingest import ingest_scene

    return ingest_scene(args.pan, args.ms, args.out, sensor=args.sensor, band_names=args.band_names or (),
                        nodata=args.nodata, example=args.example, full_scale=args.full_scale)


def _sharpen(args) -> dict:
    from infra.entry import interrupt_on_sigterm
    from infra.ray_sharpen import connect_ray, sharpen_scene

    settings = SharpenSettings.from_args(args)
    connect_ray(settings.ray_address)
    interrupt_on_sigterm()   # again: ray.init installs a SIGTERM handler of its own in the driver
    return sharpen_scene(args.scene, args.out, settings)


def _evaluate(args) -> dict:
    from flows.evaluate import evaluate_mosaic

    return evaluate_mosaic(args.mosaic, reference=args.reference, reduced=args.reduced, quicklook=args.quicklook,
                           checkpoint=args.checkpoint)


def _run(args) -> dict:
    from contextlib import nullcontext

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import pansharpen_scene

    settings = temporary_settings({PREFECT_API_URL: args.prefect_api_url}) if args.prefect_api_url else nullcontext()
    with settings:
        # The flow's parameters are flat (a Prefect deployment's are data): the settings go as theirs.
        return pansharpen_scene(
            pan=args.pan, ms=args.ms, mosaic_store=args.out, scene_store=args.scene, sensor=args.sensor,
            band_names=args.band_names, nodata=args.nodata, example=args.example, full_scale=args.full_scale,
            reference=args.reference, reduced=args.reduced, quicklook=args.quicklook,
            **SharpenSettings.from_args(args).parameters())


def _export(args) -> dict:
    from flows.export import export_cog

    given = {k: v for k, v in {"blocksize": args.blocksize, "compress": args.compress}.items() if v is not None}
    return export_cog(args.mosaic, args.cog, overwrite=args.overwrite, nodata=args.nodata, **given)


COMMANDS = {"ingest": _ingest, "sharpen": _sharpen, "evaluate": _evaluate, "run": _run, "export": _export}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from infra.entry import run_entry

    return run_entry(f"ssdiff {args.command}", lambda: COMMANDS[args.command](args),
                     where=getattr(args, "out", None) or getattr(args, "scene", None),
                     rerun_hint="rerun the same command to finish the missing tiles")


if __name__ == "__main__":
    sys.exit(main())
