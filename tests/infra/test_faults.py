"""Faults and bad input: nothing lost, nothing corrupted, every error clear.

Users reprocess archives over days on shared clusters: actors die, jobs are killed, files are corrupt, disks fill.
Every test here does the damage for real, with no mock of Ray or Zarr: an actor process SIGKILLed while it holds
tiles, a job's process group SIGKILLed mid-run, a second run started on a store in use, broken and inconsistent
GeoTIFFs, an unwritable output, a file-size limit and a full tmpfs under the writes, a tampered checkpoint, hostile
names. What must hold each time: nothing finished is lost or recomputed, no store is corrupted (a rerun ends with
the mosaic of an undisturbed run, bit for bit), a store that existed is left exactly as it was, and the error is
one line naming the file and the problem, with a non-zero exit status.

The sharpening runs share one small scene (a 128 x 128 PAN crop: 4 x 4 tiles) and the settings of ``RUN``. Its
batch size of 1 makes every tile its own network call in every run, so a resumed run, whose batches start wherever
the killed one stopped, computes each tile exactly as the undisturbed run did: the mosaics compare bit for bit.
Two actors on the two CPUs of ``ray_local`` give every run the same torch threads (one per actor) for the same
reason, which is also why the killed job joins ``ray_local`` rather than starting a Ray of its own.

The undisturbed mosaic, and the mosaic of a scene with nodata regions, are sharpened without Ray by the runner
the actors run (``sharpen_here``): an actor pool takes seconds to start, so only the tests about actors, jobs and
runs start one, and they are marked slow.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import (
    BAND_NAMES,
    CROP,
    MS_BANDS,
    PROJECT_ROOT,
    blank_top_left,
    ingest_args,
    landsat_crop,
    run_cli,
    store_state,
    tiny_checkpoint,
    with_nodata,
    write_crop,
)

from flows.cli import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_FAILED, main
from ssdiff_model.errors import BadInput
from tiling import TILE_NODATA, TILE_SHARPENED, StoreBusyError, lock_path, missing_tiles, open_mosaic

SMALL = 128                  # PAN pixels a side of the sharpened scene
TILES = 16                   # its tiles at these settings: cores of 64 - 2 * 16 = 32 pixels
SETTINGS = {"tile_size": 64, "halo": 16, "seed": 0, "steps": 2}
RUN = ["--tile", "64", "--halo", "16", "--seed", "0", "--steps", "2", "--batch-size", "1", "--actors", "2",
       "--no-progress"]


def sharpen_args(scene: Path, mosaic: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["sharpen", str(scene), "--out", str(mosaic), "--checkpoint", str(checkpoint), *RUN, *extra]


def new_mosaic(mosaic: Path, scene: Path, checkpoint: Path):
    """Create the mosaic store `ssdiff sharpen` creates with RUN (and resumes); returns the model and the grid."""
    from ssdiff_model.inference.pansharpener import Pansharpener
    from tiling import create_mosaic_store

    pansharpener = Pansharpener.from_checkpoint(checkpoint, device="cpu")
    return pansharpener, create_mosaic_store(mosaic, scene, pansharpener, **SETTINGS)


@pytest.fixture(scope="module")
def small_scene(landsat_scene, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small")
    scene = folder / "scene.zarr"
    assert main(ingest_args(landsat_crop(landsat_scene, folder, size=SMALL), scene)) == 0
    return scene


def sharpen_here(scene: Path, mosaic: Path, checkpoint: Path) -> dict[str, int]:
    """Sharpen a scene without Ray: the tiles one after another in this process, by the runner every actor runs,
    with an actor's one torch thread (an actor pool costs seconds to start)."""
    import torch

    from tiling import run_tiles

    pansharpener, grid = new_mosaic(mosaic, scene, checkpoint)
    counts = {"sharpened": 0, "nodata": 0}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for tile in grid.tiles():
            done = run_tiles(scene, mosaic, pansharpener, [tile], batch_size=1, seed=SETTINGS["seed"],
                             steps=SETTINGS["steps"])
            counts = {key: counts[key] + done[key] for key in counts}
    finally:
        torch.set_num_threads(threads)
    return counts


@pytest.fixture(scope="module")
def undisturbed(small_scene, checkpoint, tmp_path_factory) -> dict:
    """The mosaic of a run nothing disturbed, what every disturbed run must end with bit for bit: sharpened
    without Ray, which also makes the comparison the strictest one."""
    mosaic = tmp_path_factory.mktemp("undisturbed") / "mosaic.zarr"
    assert sharpen_here(small_scene, mosaic, checkpoint)["sharpened"] == TILES
    return {"store": mosaic, "hrms": open_mosaic(mosaic)["hrms"].values}


def assert_same_mosaic(mosaic: Path, undisturbed: dict) -> None:
    assert not missing_tiles(mosaic), "every tile finished"
    np.testing.assert_array_equal(open_mosaic(mosaic)["hrms"].values, undisturbed["hrms"])


def tiles_done(mosaic: Path) -> int:
    return TILES - len(missing_tiles(mosaic))


def core_files(mosaic: Path) -> dict[str, tuple[int, str]]:
    """The state of the finished tiles' files: their core in ``hrms`` and their manifest entry (Zarr v3 keys one
    chunk per tile, ``hrms/c/0/<row>/<col>`` and ``done/c/<row>/<col>``)."""
    done = open_mosaic(mosaic)["done"].values
    keys = {key for row, col in zip(*np.nonzero(done)) for key in (f"hrms/c/0/{row}/{col}", f"done/c/{row}/{col}")}
    return {key: state for key, state in store_state(mosaic).items() if key in keys}


def the_error(capsys) -> str:
    """What the command printed on stderr, after checking it is one line and no traceback."""
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return error


# ---- processes: started in a session of their own, so that exactly they can be killed ---------------------------

def start_in_own_session(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                start_new_session=True)


def kill_session(process: subprocess.Popen) -> None:
    """SIGKILL every process of the session ``process`` leads: it and whatever it started, nothing else."""
    for _ in range(200):
        members = _session_members(process.pid)
        if not members:
            break
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    process.wait(timeout=30)


def _session_members(session: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        try:
            # /proc/<pid>/stat after the ")" closing the command name: state, ppid, pgrp, session, ...
            state, _, _, sid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
        except (OSError, ValueError, IndexError):
            continue   # not a process, or gone meanwhile
        if int(sid) == session and state != "Z":
            members.append(int(entry.name))
    return members


def wait_for(condition, what: str, job: subprocess.Popen | None = None, log: Path | None = None,
             timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if job is not None and job.poll() is not None:
            pytest.fail(f"the job exited with {job.returncode} before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---- actors and jobs killed, runs at once --------------------------------------------------------------------------

@pytest.mark.slow
def test_an_actor_process_killed_while_it_holds_tiles_loses_nothing(undisturbed, ray_local, small_scene, checkpoint,
                                                                    tmp_path):
    from infra.pool import SharpenerPool

    mosaic = tmp_path / "mosaic.zarr"
    new_mosaic(mosaic, small_scene, checkpoint)
    killed = []
    with SharpenerPool(checkpoint, actors=2) as pool:
        victim = pool.placement[0]["pid"]

        def kill_the_first_actor(batch):
            # Called as a result comes back: every actor was given two calls, so the victim still holds one.
            if not killed:
                os.kill(victim, signal.SIGKILL)   # the OS kills it, as the OOM killer would: no Ray call
                killed.append(victim)

        counts = pool.sharpen(small_scene, mosaic, missing_tiles(mosaic), seed=SETTINGS["seed"],
                              steps=SETTINGS["steps"], batch_size=1, progress=False,
                              on_batch_done=kill_the_first_actor)
        assert pool.restarts == 1, "the dead actor was replaced"
    assert killed and counts["batches_retried"] >= 1, "its tiles were retried elsewhere"
    assert counts["sharpened"] == TILES
    assert_same_mosaic(mosaic, undisturbed)


@pytest.mark.slow
def test_a_job_killed_mid_run_resumes_where_it_stopped_and_a_second_run_meanwhile_is_refused(
        undisturbed, ray_local, small_scene, checkpoint, tmp_path, capsys):
    mosaic, log = tmp_path / "mosaic.zarr", tmp_path / "job.log"
    address = ray_local.get_runtime_context().gcs_address
    # The job joins the shared cluster as a job on a long-lived cluster does: killing it must free its actors.
    job = start_in_own_session([sys.executable, "-m", "flows.cli",
                                *sharpen_args(small_scene, mosaic, checkpoint, "--ray-address", address)], log)
    try:
        # The store appears complete (renamed into place) under the job's lock, before its actors start.
        wait_for(mosaic.exists, "the job to create its store", job, log)
        assert main(sharpen_args(small_scene, mosaic, checkpoint)) == EXIT_BUSY
        error = the_error(capsys)
        assert f"{mosaic}: in use by another run (pid {job.pid} on " in error, error
        wait_for(lambda: tiles_done(mosaic) > 0, "the job to finish a tile", job, log)
    finally:
        kill_session(job)   # SIGKILL, the job and anything it started
    assert job.returncode == -signal.SIGKILL
    wait_for(lambda: ray_local.available_resources().get("CPU") == 2.0, "the killed job's actors to free their CPUs")

    finished = tiles_done(mosaic)
    assert 0 < finished < TILES, "killed mid-run"
    kept = core_files(mosaic)
    summary = run_cli(sharpen_args(small_scene, mosaic, checkpoint))
    assert (summary["tiles_already_done"], summary["sharpened"]) == (finished, TILES - finished)
    assert {key: store_state(mosaic)[key] for key in kept} == kept, "finished cores are not rewritten"
    assert not lock_path(mosaic).exists(), "no lock left behind"
    assert_same_mosaic(mosaic, undisturbed)


def test_two_ingests_of_one_scene_at_once_end_with_one_store(crop, tmp_path):
    out, results = tmp_path / "scene.zarr", []

    def ingest():
        from flows.ingest import ingest_scene

        results.append(ingest_scene(crop["pan"], [crop["ms"]], out, sensor="Landsat8", band_names=BAND_NAMES))

    ingests = [threading.Thread(target=ingest) for _ in range(2)]
    for thread in ingests:
        thread.start()
    for thread in ingests:
        thread.join()
    # Whichever renamed its store into place first wins; the other finds the same files there and reuses them.
    assert len(results) == 2 and [r["scene_store"] for r in results] == [str(out)] * 2
    assert sorted(r["reused"] for r in results) == [False, True]
    assert [p.name for p in tmp_path.iterdir()] == ["scene.zarr"], "no partial store left"


# ---- the system refuses a write -----------------------------------------------------------------------------------

@contextmanager
def tmpfs(where: Path, options: str):
    """A tmpfs mounted at ``where`` for the block: a file system of our own to fill up or make read-only. Mounting
    needs root (CAP_SYS_ADMIN): elsewhere the test skips."""
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """A file taking all of ``disk``'s free space but ``leave`` bytes."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler = disk / "filler"
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(free - leave, 1))
    return filler


@pytest.mark.slow
def test_a_full_disk_stops_the_run_with_a_clear_error_and_a_rerun_finishes_it(undisturbed, ray_local, small_scene,
                                                                              checkpoint, tmp_path, capsys):
    scene_before = store_state(small_scene)
    with tmpfs(tmp_path / "disk", "size=1m") as disk:
        mosaic = disk / "mosaic.zarr"
        # The store's metadata first (the run resumes it), then room left for a few tiles only.
        new_mosaic(mosaic, small_scene, checkpoint)
        filler = fill(disk, leave=64 * 1024)
        assert main(sharpen_args(small_scene, mosaic, checkpoint)) == EXIT_FAILED
        error = the_error(capsys)
        assert f"{mosaic}: No space left on device" in error and "rerun" in error, error
        finished = tiles_done(mosaic)
        assert finished < TILES and not lock_path(mosaic).exists()
        # The manifest never lies: a tile it marks holds its final core.
        done = open_mosaic(mosaic)["done"].values.repeat(32, axis=0).repeat(32, axis=1) == TILE_SHARPENED
        np.testing.assert_array_equal(open_mosaic(mosaic)["hrms"].values[:, done], undisturbed["hrms"][:, done])

        filler.unlink()   # space freed: the same command finishes the job
        summary = run_cli(sharpen_args(small_scene, mosaic, checkpoint))
        assert (summary["tiles_already_done"], summary["sharpened"]) == (finished, TILES - finished)
        assert_same_mosaic(mosaic, undisturbed)
    assert store_state(small_scene) == scene_before


def test_a_write_past_a_file_size_limit_is_one_clear_line_and_leaves_no_partial_store(crop, scene_store, tmp_path):
    out = tmp_path / "scene.zarr"
    before = store_state(scene_store)

    def limit_file_size():   # in the child: writes past 16 KiB fail with EFBIG, as a full disk fails them
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

    result = subprocess.run([sys.executable, "-m", "flows.cli", *ingest_args(crop, out)], preexec_fn=limit_file_size,
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == EXIT_FAILED, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("ssdiff ingest: error:")]
    assert f"{out}: File too large" in error and "nothing was kept" in error, error
    assert list(tmp_path.iterdir()) == [], "no store, no partial sibling"
    assert store_state(scene_store) == before


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write: chmod 0o500, or for root (whom chmod does not stop) a read-only tmpfs."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o500)
        yield folder
        folder.chmod(0o700)
    else:
        with tmpfs(tmp_path / "read-only", "ro,size=64k") as folder:
            yield folder


@pytest.mark.parametrize("place", ["under a file", "read-only"])
@pytest.mark.parametrize("command", ["ingest", "sharpen"])
def test_an_unwritable_output_is_one_clear_line_and_leaves_stores_untouched(command, place, request, ray_local, crop,
                                                                            small_scene, checkpoint, undisturbed,
                                                                            tmp_path, capsys):
    if place == "under a file":
        (tmp_path / "notes.txt").write_text("a file, not a folder")
        out, problem = tmp_path / "notes.txt" / "out.zarr", "notes.txt is a file, not a folder"
    else:
        out = request.getfixturevalue("read_only_folder") / "out.zarr"
        problem = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    args = ingest_args(crop, out) if command == "ingest" else sharpen_args(small_scene, out, checkpoint)
    before = {store: store_state(store) for store in (small_scene, undisturbed["store"])}
    assert main(args) == EXIT_FAILED
    error = the_error(capsys)
    assert str(out) in error and problem in error, error
    assert not out.exists() and not lock_path(out).exists()
    assert {store: store_state(store) for store in before} == before


# ---- bad input ------------------------------------------------------------------------------------------------------

def _with_crs(path: Path, epsg: int) -> Path:
    with rasterio.open(path, "r+") as dst:
        dst.crs = rasterio.crs.CRS.from_epsg(epsg)
    return path


def _text_file(path: Path) -> Path:
    path.write_text("not a GeoTIFF")
    return path


def _first_half(source: Path, path: Path) -> Path:
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return path


BAD_MS = {   # problem: (how to make the MS file, what the error must say)
    # 100 MS pixels for 256 PAN pixels: no integer ratio, and extents that differ.
    "ratio": (lambda ms, tmp: write_crop(ms, tmp / "ms_small.tif", 200, 200, 100), "mismatched"),
    "crs": (lambda ms, tmp: _with_crs(write_crop(ms, tmp / "ms_utm15.tif", 200, 200, CROP // 2), 32615), "CRS"),
    # The right size and pixels, georeferenced 10 MS pixels (300 m) off the PAN: a wrong transform.
    "shifted": (lambda ms, tmp: write_crop(ms, tmp / "ms_shifted.tif", 210, 210, CROP // 2), "extents differ"),
    "nan": (lambda ms, tmp: write_crop(ms, tmp / "ms_nan.tif", 200, 200, CROP // 2, "float32",
                                       edit=lambda d: np.where(np.arange(d.size).reshape(d.shape) == 7, np.nan, d)),
            "NaN"),
    "inf": (lambda ms, tmp: write_crop(ms, tmp / "ms_inf.tif", 200, 200, CROP // 2, "float32",
                                       edit=lambda d: np.where(np.arange(d.size).reshape(d.shape) == 7, np.inf, d)),
            "infinite"),
    "all nodata": (lambda ms, tmp: with_nodata(write_crop(ms, tmp / "ms_empty.tif", 200, 200, CROP // 2,
                                                           edit=np.zeros_like), 0), "is nodata"),
    "unreadable": (lambda ms, tmp: _text_file(tmp / "ms_broken.tif"), "unreadable"),
    "truncated": (lambda ms, tmp: _first_half(write_crop(ms, tmp / "ms_whole.tif", 200, 200, CROP // 2),
                                              tmp / "ms_cut.tif"), "corrupt"),
    "missing": (lambda ms, tmp: tmp / "no_such_ms.tif", "no such file"),
}


@pytest.mark.parametrize("problem", list(BAD_MS))
def test_bad_input_names_the_file_and_leaves_stores_untouched(problem, landsat_scene, crop, scene_store, tmp_path,
                                                              capsys):
    make, expected = BAD_MS[problem]
    ms = make([landsat_scene[b] for b in MS_BANDS], tmp_path)
    before = store_state(scene_store)
    for out in (scene_store, tmp_path / "new.zarr"):     # an existing store, and a store that must not appear
        assert main(ingest_args({"pan": crop["pan"], "ms": ms}, out)) == EXIT_BAD_INPUT
        error = the_error(capsys)
        assert str(ms) in error and expected in error, error
    assert store_state(scene_store) == before
    assert not (tmp_path / "new.zarr").exists()
    assert not [p for p in (*tmp_path.iterdir(), *scene_store.parent.iterdir()) if "partial" in p.name]


def test_nodata_regions_stay_nodata_and_their_tiles_are_skipped(landsat_scene, checkpoint, tmp_path):
    """What users expect of a scene with nodata (a swath edge, a masked region): no error, the region stays nodata
    in the mosaic, and tiles without a valid pixel are marked nodata, not sharpened. (A scene that is nodata
    throughout is an error instead: see BAD_MS["all nodata"].)"""
    # Both files declare nodata 0 and hold it over the same ground: PAN pixels 0:64, MS pixels 0:32.
    pan = with_nodata(write_crop([landsat_scene["B8"]], tmp_path / "pan.tif", 400, 400, SMALL,
                                  edit=blank_top_left(64)), 0)
    ms = with_nodata(write_crop([landsat_scene[b] for b in MS_BANDS], tmp_path / "ms.tif", 200, 200, SMALL // 2,
                                 edit=blank_top_left(32)), 0)
    scene, mosaic = tmp_path / "scene.zarr", tmp_path / "mosaic.zarr"
    run_cli(ingest_args({"pan": pan, "ms": ms}, scene))
    assert sharpen_here(scene, mosaic, checkpoint) == {"sharpened": TILES - 4, "nodata": 4}
    result = open_mosaic(mosaic)
    expected_done = np.full((4, 4), TILE_SHARPENED)
    expected_done[:2, :2] = TILE_NODATA
    np.testing.assert_array_equal(result["done"].values, expected_done)
    nodata = np.zeros((4, SMALL, SMALL), dtype=bool)
    nodata[:, :64, :64] = True
    np.testing.assert_array_equal(np.isnan(result["hrms"].values), nodata)


def test_a_checkpoint_of_other_bands_is_refused_without_touching_the_mosaic(undisturbed, ray_local, small_scene,
                                                                           tmp_path, capsys):
    eight = tiny_checkpoint(tmp_path / "eight.pt", bands=8, sensor="WV3", band_names=[f"b{i}" for i in range(8)],
                            full_scale=2047.0)
    before = store_state(undisturbed["store"])
    for out in (tmp_path / "new.zarr", undisturbed["store"]):
        assert main(sharpen_args(small_scene, out, eight)) == EXIT_BAD_INPUT
        error = the_error(capsys)
        assert str(eight) in error and "4 bands" in error and "8 bands" in error, error
        assert store_state(undisturbed["store"]) == before
    assert not (tmp_path / "new.zarr").exists() and not lock_path(tmp_path / "new.zarr").exists()


def test_a_checkpoint_that_fails_its_hash_is_refused(undisturbed, ray_local, small_scene, checkpoint, tmp_path,
                                                     capsys):
    import torch

    raw = torch.load(checkpoint, weights_only=True)
    name = next(iter(raw["weights"]))
    raw["weights"][name] = raw["weights"][name] + 1e-3   # the weights change, the recorded hash does not
    tampered = tmp_path / "tampered.pt"
    torch.save(raw, tampered)
    before = store_state(undisturbed["store"])
    for out in (tmp_path / "new.zarr", undisturbed["store"]):
        assert main(sharpen_args(small_scene, out, tampered)) == EXIT_BAD_INPUT
        error = the_error(capsys)
        assert str(tampered) in error and "content hash mismatch" in error, error
    assert store_state(undisturbed["store"]) == before
    assert not (tmp_path / "new.zarr").exists()


# ---- hostile input: paths and names are data, nothing read is evaluated --------------------------------------------

SHELL_NAMES = ["a;touch pwned", "$(touch pwned)", "`touch pwned`", "x && touch pwned #", "-rf"]


def _scene_folder(inbox: Path, name: str, crop: dict, **described) -> Path:
    folder = inbox / name
    folder.mkdir(parents=True)
    shutil.copy(crop["pan"], folder / "pan.tif")
    shutil.copy(crop["ms"], folder / "ms.tif")
    (folder / "scene.json").write_text(json.dumps({"pan": "pan.tif", "ms": "ms.tif", **described}))
    return folder


def test_scene_names_with_shell_metacharacters_are_just_names(crop, tmp_path, monkeypatch):
    from flows.ingest import ingest_scene
    from flows.pipeline import find_new_scenes

    monkeypatch.chdir(tmp_path)   # where a shell running "touch pwned" would leave its mark
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    (outbox / "scenes").mkdir(parents=True)
    for name in SHELL_NAMES:
        _scene_folder(inbox, name, crop, sensor="Landsat8")
    scenes = find_new_scenes(inbox, outbox)
    assert sorted(s["name"] for s in scenes) == sorted(SHELL_NAMES)
    for scene in scenes:
        assert scene["mosaic_store"] == str(outbox / "mosaics" / f"{scene['name']}.zarr")
        ingest_scene(scene["pan"], scene["ms"], scene["scene_store"], sensor=scene["sensor"], band_names=BAND_NAMES)
    assert sorted(p.name for p in (outbox / "scenes").iterdir()) == sorted(f"{n}.zarr" for n in SHELL_NAMES)
    assert not list(tmp_path.rglob("pwned")), "nothing was executed"


@pytest.mark.parametrize("path", ["../outside.tif", "/etc/hostname", "sub/../../outside.tif"])
def test_a_scene_json_cannot_name_files_outside_its_folder(path, crop, tmp_path):
    from flows.pipeline import find_new_scenes

    folder = _scene_folder(tmp_path / "inbox", "scene", crop, sensor="Landsat8")
    (folder / "scene.json").write_text(f'{{"pan": "{path}", "ms": "ms.tif"}}')
    with pytest.raises(ValueError, match="outside the scene folder") as raised:
        find_new_scenes(tmp_path / "inbox", tmp_path / "outbox")
    assert str(folder / "scene.json") in str(raised.value)


def test_a_value_read_from_a_file_is_never_evaluated(ray_local, crop, small_scene, tmp_path, capsys):
    import torch

    from flows.pipeline import find_new_scenes

    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    # A scene.json's sensor is looked up in the sensor table, not evaluated.
    folder = _scene_folder(tmp_path / "inbox", "scene", crop, sensor=code)
    with pytest.raises(ValueError, match="unknown sensor") as raised:
        find_new_scenes(tmp_path / "inbox", tmp_path / "outbox")
    assert str(folder / "scene.json") in str(raised.value)
    # Nor is a command-line value.
    assert main([*ingest_args(crop, tmp_path / "s.zarr"), "--sensor", code]) == EXIT_BAD_INPUT
    assert "unknown sensor" in the_error(capsys)
    # A checkpoint is read with weights_only: a pickled call in it is refused, not made.

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    hostile = tmp_path / "hostile.pt"
    torch.save({"format_version": 1, "weights": Payload()}, hostile)
    assert main(sharpen_args(small_scene, tmp_path / "m.zarr", hostile)) == EXIT_BAD_INPUT
    assert f"{hostile}: not a readable checkpoint" in the_error(capsys)
    assert not marker.exists(), "nothing was executed"
    assert not (tmp_path / "s.zarr").exists() and not (tmp_path / "m.zarr").exists()


def test_the_reprocess_job_keeps_every_mosaic_inside_its_out_dir(tmp_path, monkeypatch, capsys):
    from infra.reprocess import main as reprocess
    from infra.reprocess import mosaic_path

    out_dir = tmp_path / "mosaics"
    for hostile in ["../../etc/passwd", "/abs/scene.zarr", "scenes/..", "$(touch pwned).zarr", "a;b.scene.zarr"]:
        assert mosaic_path(Path(hostile), out_dir).parent == out_dir, hostile
    monkeypatch.chdir(tmp_path)
    listing = tmp_path / "scenes.txt"
    listing.write_text("$(touch pwned)\n; touch pwned\n")
    assert reprocess(["--list", str(listing), "--out-dir", str(out_dir), "--checkpoint", "unused"]) == 2
    assert "$(touch pwned): neither a scene store nor a folder" in capsys.readouterr().err
    assert not list(tmp_path.rglob("pwned")) and not out_dir.exists()


@pytest.mark.parametrize("error, status, retried", [
    (BadInput("scene.json: outside the scene folder"), EXIT_BAD_INPUT, False),
    # a ValueError the project did not raise as bad input is a bug or a library's surprise: a failure, retried
    (ValueError("operands could not be broadcast together"), EXIT_FAILED, True),
    (FileNotFoundError(2, "No such file or directory", "pan.tif"), EXIT_BAD_INPUT, False),
    (FileExistsError(17, "File exists", "train.zarr"), EXIT_BAD_INPUT, False),
    (StoreBusyError("m.zarr: in use by another run"), EXIT_BUSY, False),
    (OSError(28, "No space left on device", "m.zarr"), EXIT_FAILED, True),
    (RuntimeError("a Ray node was lost"), EXIT_FAILED, True),
])
def test_every_entry_point_classifies_a_failure_the_same_way(error, status, retried):
    """The CLI's exit status, the ray-job entrypoints' and Prefect's retry decision come from one table, so a bad
    input is never retried by Prefect and exits 2 wherever it is raised."""
    import asyncio

    from prefect.states import exception_to_failed_state

    from flows.retry import transient_failure
    from infra.failures import error_line, exit_status

    assert exit_status(error) == status
    state = exception_to_failed_state(error)
    state = asyncio.run(state) if asyncio.iscoroutine(state) else state
    assert transient_failure(None, None, state) is retried
    if isinstance(error, OSError):
        assert error_line(error) == f"{error.filename}: {error.strerror}"
