"""Object storage end to end, on a real S3-compatible server on 127.0.0.1 that these tests start and stop
(moto's standalone server: the real HTTP protocol, s3fs, botocore and GDAL's /vsis3/ all talk to it as to AWS).

What is checked: GeoTIFFs in a bucket are ingested and sharpened into a mosaic in the bucket that equals the same
run on local disk bit for bit and opens with a plain ``xr.open_zarr("s3://...")``; the lock (a lease with
conditional writes) refuses a second writer and is taken over once its holder stopped renewing; a store half
written by a killed run is invisible and a rerun finishes it; wrong credentials and a missing bucket are one line
and exit 2; an endpoint that goes down mid-run ends the run with exit 1 after bounded retries, and the rerun
finishes it bit for bit.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import BAND_NAMES, PROJECT_ROOT, ingest_args, run_cli
from objstore_server import (  # noqa: F401 - fixtures
    AWS,
    BATCH,
    BUCKET,
    RUN,
    SMALL,
    TILES,
    environment,
    free_port,
    keys,
    local_run,
    s3,
    s3_crop,
    s3_scene,
    small_crop,
    upload,
    url,
    wait_for_a_tile,
)


def the_error(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return error


# ---- the pipeline on object storage ------------------------------------------------------------------------------

@pytest.mark.slow
def test_s3_geotiffs_sharpen_into_an_s3_mosaic_equal_to_the_local_run(s3, s3_scene, local_run, checkpoint,
                                                                     ray_local):
    import xarray as xr
    import zarr

    # The scene store holds the same pixels as the local one, read from the bucket by GDAL.
    np.testing.assert_array_equal(zarr.open_group(str(local_run["scene"]))["pan"][...],
                                  zarr.open_group(zarr_store(s3_scene), mode="r")["pan"][...])
    mosaic = url("stores", "mosaic.zarr")
    summary = run_cli(["sharpen", s3_scene, "--out", mosaic, "--checkpoint", str(checkpoint), *RUN])
    assert summary["sharpened"] == TILES
    # What a user types: nothing but the URL and the standard AWS_* variables.
    with xr.open_zarr(mosaic) as opened:
        np.testing.assert_array_equal(opened.hrms.values, local_run["hrms"])
        assert opened.hrms.rio.crs is not None
    assert not keys("stores/.mosaic.zarr.lock"), "the lease is released"
    # 16 tiles, one shard: one object of cores and one of manifest entries, not 32 objects.
    assert len(keys("stores/mosaic.zarr/hrms/c/")) == 1 and len(keys("stores/mosaic.zarr/done/c/")) == 1
    # A rerun finds every tile done and writes nothing.
    again = run_cli(["sharpen", s3_scene, "--out", mosaic, "--checkpoint", str(checkpoint), *RUN])
    assert (again["tiles_already_done"], again["sharpened"]) == (TILES, 0)
    # Bytes flipped inside the shard object: the rerun names the damage, redoes the shard, and ends bit for bit.
    import boto3

    client, (shard,) = boto3.client("s3"), keys("stores/mosaic.zarr/hrms/c/")
    body = bytearray(client.get_object(Bucket=BUCKET, Key=shard)["Body"].read())
    body[len(body) // 2:len(body) // 2 + 8] = bytes(8)
    client.put_object(Bucket=BUCKET, Key=shard, Body=bytes(body))
    repaired = run_cli(["sharpen", s3_scene, "--out", mosaic, "--checkpoint", str(checkpoint), *RUN])
    assert repaired["tiles_repaired"] and repaired["sharpened"] == TILES
    with xr.open_zarr(mosaic) as opened:
        np.testing.assert_array_equal(opened.hrms.values, local_run["hrms"])
    # evaluate reads it from the bucket and puts its quicklook beside it.
    quality = run_cli(["evaluate", mosaic])
    assert quality["quicklook"] == url("stores", "mosaic.quicklook.png") and "stores/mosaic.quicklook.png" in keys("")
    with xr.open_zarr(mosaic) as opened:
        assert "quality" in opened.attrs


@pytest.mark.slow
def test_adapted_weights_live_beside_an_s3_mosaic_and_it_equals_the_local_adapted_run(s3, s3_scene, local_run,
                                                                                    checkpoint, ray_local, tmp_path):
    """--adapt into s3://: the weights are one object beside the mosaic, the actors read it, the mosaic equals the
    same adapted run on local disk bit for bit, and a rerun reuses the weights and finds every tile done."""
    import xarray as xr

    adapt = ["--checkpoint", str(checkpoint), *RUN, "--adapt", "2"]
    local_mosaic = tmp_path / "adapted.zarr"
    local = run_cli(["sharpen", str(local_run["scene"]), "--out", str(local_mosaic), *adapt])
    mosaic = url("adapted", "mosaic.zarr")
    remote = run_cli(["sharpen", s3_scene, "--out", mosaic, *adapt])
    assert "adapted/mosaic.adapted.pt" in keys("adapted/")
    assert remote["adaptation"]["adapted_checkpoint"] == url("adapted", "mosaic.adapted.pt")
    assert not local["adaptation"]["reused"] and not remote["adaptation"]["reused"]
    with xr.open_zarr(mosaic) as opened, xr.open_zarr(local_mosaic) as expected:
        np.testing.assert_array_equal(opened.hrms.values, expected.hrms.values)
        # the actors loaded the adapted object: the mosaic is theirs (its hash records the adaptation, whatever the
        # check kept), and its pixels are the base's exactly when the check kept the base's weights
        assert opened.attrs["checkpoint_hash"] == remote["adaptation"]["adapted_hash"] != remote["adaptation"][
            "base_hash"]
        kept_base = remote["adaptation"]["kept_iteration"] == 0
        assert np.array_equal(opened.hrms.values, local_run["hrms"]) == kept_base
    again = run_cli(["sharpen", s3_scene, "--out", mosaic, *adapt])
    assert again["adaptation"]["reused"] and (again["tiles_already_done"], again["sharpened"]) == (TILES, 0)


@pytest.mark.slow
def test_the_reprocess_job_takes_a_prefix_of_scene_stores_and_an_s3_out_dir(s3, s3_scene, local_run, checkpoint,
                                                                           ray_local, capsys):
    import xarray as xr

    from infra.reprocess import main

    assert main([url("stores"), "--out-dir", url("archive"), "--checkpoint", str(checkpoint), "--steps", "2",
                 "--tile", "64", "--halo", "16", "--batch-size", str(BATCH), "--actors", "2"]) == 0
    with xr.open_zarr(url("archive", "scene.zarr")) as opened:
        np.testing.assert_array_equal(opened.hrms.values, local_run["hrms"])


def zarr_store(path):
    from tiling.objstore import zarr_store as store

    return store(path, read_only=True)


# ---- atomicity without rename: the root metadata is the commit marker ----------------------------------------------

def test_a_store_half_written_by_a_killed_ingest_is_invisible_and_a_rerun_finishes_it(s3, s3_crop, s3_scene):
    import xarray as xr

    from flows.ingest import read_scene
    from tiling import built_beside, write_scene_store
    from tiling.objstore import exists

    scene = url("half", "scene.zarr")
    pair = read_scene(s3_crop["pan"], [s3_crop["ms"]], sensor="Landsat8", band_names=BAND_NAMES)

    class Killed(Exception):
        pass

    with pytest.raises(Killed):   # every object written, then killed before the commit
        with built_beside(scene, "test") as staged:
            write_scene_store(staged, pair)
            raise Killed
    assert any(key.startswith("half/scene.zarr/pan/c/") for key in keys("half/")), "chunks were written"
    assert not exists(scene)
    with pytest.raises(Exception):  # noqa: B017 - whichever error the zarr/fsspec stack gives: readers see no store
        xr.open_zarr(scene)
    summary = run_cli(ingest_args(s3_crop, scene))
    assert not summary["reused"]
    with xr.open_zarr(scene) as rerun, xr.open_zarr(s3_scene) as reference:
        np.testing.assert_array_equal(rerun.pan.values, reference.pan.values)
        np.testing.assert_array_equal(rerun.ms.values, reference.ms.values)


@pytest.mark.slow
def test_a_mosaic_half_sharpened_by_a_killed_run_is_finished_by_a_rerun_bit_for_bit(s3, s3_scene, local_run,
                                                                                    checkpoint, ray_local):
    import xarray as xr

    from ssdiff_model.inference.pansharpener import Pansharpener
    from tiling import create_mosaic_store, missing_tiles, run_tiles

    mosaic = url("killed", "mosaic.zarr")
    model = Pansharpener.from_checkpoint(checkpoint, device="cpu")
    grid = create_mosaic_store(mosaic, s3_scene, model, tile_size=64, halo=16, seed=0, steps=2, batch_size=BATCH)
    # What a run killed after five tiles leaves: those five written and marked, nothing else (sharpened with an
    # actor's one torch thread, as the runs compared with).
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_tiles(s3_scene, mosaic, model, list(grid.tiles())[:5], batch_size=BATCH, seed=0, steps=2)
    finally:
        torch.set_num_threads(threads)
    assert len(missing_tiles(mosaic)) == TILES - 5
    summary = run_cli(["sharpen", s3_scene, "--out", mosaic, "--checkpoint", str(checkpoint), *RUN])
    assert (summary["tiles_already_done"], summary["sharpened"]) == (5, TILES - 5)
    with xr.open_zarr(mosaic) as opened:
        np.testing.assert_array_equal(opened.hrms.values, local_run["hrms"])


def test_a_resumed_s3_mosaic_keeps_its_own_sampling_settings(s3, s3_scene, checkpoint, ray_local, tmp_path):
    """As on local disk: a rerun that gives no sampling settings finishes an s3 mosaic with those it was created
    with, not with what the checkpoint recommends."""
    from ssdiff_model.inference.pansharpener import Pansharpener
    from ssdiff_model.model.checkpoint import load_checkpoint, save_checkpoint
    from tiling import create_mosaic_store

    recommending = load_checkpoint(checkpoint)
    recommending.training["sampling_defaults"] = {"steps": 1, "back_projection": 2, "ensemble": 2}
    save_checkpoint(recommending, tmp_path / "recommending.pt")
    mosaic = url("resumed", "mosaic.zarr")
    # made with 2 steps, no back-projection, one view, before any tile was sharpened
    create_mosaic_store(mosaic, s3_scene, Pansharpener.from_checkpoint(tmp_path / "recommending.pt", device="cpu"),
                        tile_size=64, halo=16, seed=0, steps=2, batch_size=BATCH)
    summary = run_cli(["sharpen", s3_scene, "--out", mosaic, "--checkpoint", str(tmp_path / "recommending.pt"),
                       "--tile", "64", "--batch-size", str(BATCH), "--actors", "1", "--no-progress"])
    assert (summary["steps"], summary["back_projection"], summary["ensemble"], summary["sharpened"]) == (2, 0, 1, TILES)
    assert {summary["sampling_settings_from"][k] for k in ("steps", "back_projection", "ensemble")} == {"mosaic store"}


# ---- the lock: a lease with conditional writes ---------------------------------------------------------------------

def test_a_second_writer_is_refused_and_a_dead_holders_lease_is_taken_over(s3, s3_scene, checkpoint, ray_local,
                                                                          capsys):
    from flows.cli import EXIT_BUSY, main
    from tiling import StoreBusyError, store_lock
    from tiling.lock import lock_path

    mosaic = url("locked", "mosaic.zarr")
    assert lock_path(mosaic) == url("locked", ".mosaic.zarr.lock")
    with store_lock(mosaic):
        with pytest.raises(StoreBusyError, match=f"pid {os.getpid()} on "):
            with store_lock(mosaic):
                pass
        assert main(["sharpen", s3_scene, "--out", mosaic, "--checkpoint", str(checkpoint), *RUN]) == EXIT_BUSY
        assert f"{mosaic}: in use by another run (pid {os.getpid()}" in the_error(capsys)
    assert not keys("locked/.mosaic.zarr.lock"), "released"

    # A holder killed without releasing: its record stays, unexpired for a while, then expired.
    import boto3

    record = {"pid": 1, "host": "gone", "started": "2026-01-01T00:00:00+00:00", "command": "ssdiff sharpen"}
    client = boto3.client("s3")
    client.put_object(Bucket=BUCKET, Key="locked/.mosaic.zarr.lock",
                      Body=json.dumps({**record, "expires": "2999-01-01T00:00:00+00:00"}).encode())
    with pytest.raises(StoreBusyError, match="pid 1 on gone"):
        with store_lock(mosaic):
            pass
    client.put_object(Bucket=BUCKET, Key="locked/.mosaic.zarr.lock",
                      Body=json.dumps({**record, "expires": "2026-01-01T00:01:00+00:00"}).encode())
    with store_lock(mosaic):
        holder = json.loads(client.get_object(Bucket=BUCKET, Key="locked/.mosaic.zarr.lock")["Body"].read())
        assert holder["pid"] == os.getpid(), "taken over"
    assert not keys("locked/.mosaic.zarr.lock")


def test_of_two_runs_taking_over_an_expired_lease_at_once_exactly_one_wins(s3):
    import threading

    import boto3

    from tiling.lease import LeaseBusy, _Lease

    key = "race/.mosaic.zarr.lock"
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps({"expires": "2000-01-01T00:00:00"}))
    leases = [_Lease(url(key)) for _ in range(2)]
    for lease in leases:   # both read the same expired record before either writes
        lease._read = (lambda read: lambda: read)(lease._read())
    outcomes, start = [], threading.Barrier(2)

    def take(lease):
        start.wait()
        try:
            lease.acquire()
            outcomes.append("won")
        except LeaseBusy:
            outcomes.append("busy")

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["busy", "won"]


def test_a_lease_is_renewed_while_its_run_lives(s3):
    import boto3

    from tiling.lease import lease

    with environment(SSDIFF_LEASE_SECONDS="1"):
        with lease(url("renew", ".mosaic.zarr.lock")) as held:
            first = held.etag
            time.sleep(1.5)   # past the first expiry: renewed meanwhile, so still ours
            record = json.loads(boto3.client("s3").get_object(Bucket=BUCKET, Key="renew/.mosaic.zarr.lock")["Body"]
                                .read())
            assert held.etag != first and record["pid"] == os.getpid() and not held.lost.is_set()


# ---- faults: bad credentials, no bucket, endpoint down -------------------------------------------------------------

def test_a_missing_bucket_is_one_line_and_exit_2(s3, s3_crop, s3_scene, checkpoint, capsys):
    from flows.cli import EXIT_BAD_INPUT, main

    assert main(ingest_args(s3_crop, "s3://no-such-bucket/scene.zarr")) == EXIT_BAD_INPUT
    assert "s3://no-such-bucket/scene.zarr: the bucket does not exist" in the_error(capsys)
    assert main(ingest_args({"pan": "s3://no-such-bucket/pan.tif", "ms": s3_crop["ms"]},
                            url("x", "scene.zarr"))) == EXIT_BAD_INPUT
    assert "s3://no-such-bucket/pan.tif: the bucket does not exist" in the_error(capsys)
    assert main(["sharpen", s3_scene, "--out", "s3://no-such-bucket/m.zarr", "--checkpoint", str(checkpoint),
                 *RUN]) == EXIT_BAD_INPUT
    assert "s3://no-such-bucket/m.zarr: the bucket does not exist" in the_error(capsys)
    assert not keys("x/")


def test_wrong_credentials_are_one_line_and_exit_2(small_crop, tmp_path):
    """A server that checks credentials (moto's standalone server with authentication from the first request):
    keys it does not know are refused."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        cli = {**os.environ, **AWS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "wrong",
               "PYTHONPATH": str(PROJECT_ROOT)}
        for args, named in ((ingest_args(small_crop, "s3://some-bucket/scene.zarr"), "s3://some-bucket/scene.zarr"),
                            (ingest_args({"pan": "s3://some-bucket/pan.tif", "ms": small_crop["ms"]},
                                         str(tmp_path / "scene.zarr")), "s3://some-bucket/pan.tif")):
            result = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=cli, capture_output=True,
                                    text=True, timeout=120, cwd=PROJECT_ROOT)
            assert result.returncode == 2, result.stderr
            assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
            assert result.stderr.startswith(f"ssdiff ingest: error: {named}: access denied"), result.stderr
        assert not (tmp_path / "scene.zarr").exists()
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"no server on port {port}")


@pytest.mark.slow
def test_an_endpoint_down_mid_run_exits_1_and_the_rerun_finishes_bit_for_bit(s3, s3_scene, local_run, checkpoint,
                                                                            ray_local, tmp_path):
    from tiling import missing_tiles

    mosaic, log = url("outage", "mosaic.zarr"), tmp_path / "job.log"
    address = ray_local.get_runtime_context().gcs_address
    # Shards of 2 x 2 tiles: four shard objects, written one after another, so the endpoint dies between them.
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "AWS_MAX_ATTEMPTS": "3", "SSDIFF_SHARD_PIXELS": "64"}
    with open(log, "w") as out:
        job = subprocess.Popen([sys.executable, "-m", "flows.cli", "sharpen", s3_scene, "--out", mosaic,
                                "--checkpoint", str(checkpoint), *RUN, "--ray-address", address], env=env,
                               stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True)
    try:
        wait_for_a_tile(job, mosaic, log, timeout=240)
        s3.stop()
        stopped = time.monotonic()
        code = job.wait(timeout=180)
        waited = time.monotonic() - stopped
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        s3.start() if s3.server is None else None
    output = log.read_text()
    errors = [line for line in output.splitlines() if line.startswith("ssdiff sharpen: error:")]
    assert code == 1, output[-3000:]
    assert len(errors) == 1 and "does not answer" in errors[0] and "rerun" in errors[0], output[-3000:]
    assert waited < 120, f"gave up after {waited:.0f} s: the retries are bounded"
    finished = TILES - len(missing_tiles(mosaic))
    assert finished < TILES
    # The dead run could not delete its lease (the endpoint was down); it ran on this host and is gone, so the
    # rerun takes the lease over at once instead of waiting for it to expire.
    summary = run_cli(["sharpen", s3_scene, "--out", mosaic, "--checkpoint", str(checkpoint), *RUN])
    assert summary["tiles_already_done"] == finished
    import xarray as xr

    with xr.open_zarr(mosaic) as opened:
        np.testing.assert_array_equal(opened.hrms.values, local_run["hrms"])


@pytest.mark.slow
def test_the_run_flow_ingests_sharpens_and_evaluates_on_s3(s3, s3_crop, local_run, checkpoint, ray_local):
    """`ssdiff run` (the Prefect flow) with s3:// inputs and output: the scene store goes beside the mosaic."""
    import xarray as xr

    mosaic = url("flow", "mosaic.zarr")
    summary = run_cli(["run", "--pan", s3_crop["pan"], "--ms", s3_crop["ms"], "--sensor", "Landsat8",
                       "--band-names", *BAND_NAMES, "--out", mosaic, "--checkpoint", str(checkpoint), *RUN])
    assert summary["ingest"]["scene_store"] == url("flow", "mosaic.scene.zarr")
    assert summary["evaluate"]["quicklook"] == url("flow", "mosaic.quicklook.png")
    with xr.open_zarr(mosaic) as opened:
        np.testing.assert_array_equal(opened.hrms.values, local_run["hrms"])


@pytest.mark.slow
def test_an_s3_mosaic_exports_to_a_valid_cog_in_the_bucket_and_on_disk(s3, s3_scene, local_run, checkpoint, ray_local,
                                                                     tmp_path, capsys):
    """`ssdiff export` of an s3:// mosaic: to an s3:// COG (one PUT, nothing left beside it) and to a local one;
    both are valid COGs holding the local run's pixels; an existing object is kept without --overwrite."""
    import boto3
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    mosaic = url("cog", "mosaic.zarr")
    run_cli(["sharpen", s3_scene, "--out", mosaic, "--checkpoint", str(checkpoint), *RUN])
    summary = run_cli(["export", mosaic, "--cog", url("cog", "mosaic.tif"), "--blocksize", "64"])
    assert summary["cog"] == url("cog", "mosaic.tif") and summary["overviews"]
    assert [k for k in keys("cog/") if not k.startswith("cog/mosaic.zarr/")] == ["cog/mosaic.tif"]
    downloaded = tmp_path / "downloaded.tif"
    boto3.client("s3").download_file(BUCKET, "cog/mosaic.tif", str(downloaded))
    local = tmp_path / "local.tif"
    run_cli(["export", mosaic, "--cog", str(local), "--blocksize", "64"])
    for cog in (downloaded, local):
        valid, errors, _ = cog_validate(str(cog))
        assert valid, errors
        with rasterio.open(cog) as opened:
            np.testing.assert_array_equal(opened.read(), local_run["hrms"])
            assert opened.crs is not None and opened.tags()["mosaic_store"] == mosaic
    from flows.cli import EXIT_BAD_INPUT, main

    capsys.readouterr()
    assert main(["export", mosaic, "--cog", url("cog", "mosaic.tif")]) == EXIT_BAD_INPUT
    error = the_error(capsys)
    assert url("cog", "mosaic.tif") in error and "--overwrite" in error


def test_a_stac_item_in_the_bucket_with_relative_and_s3_hrefs_ingests_like_its_files(s3, s3_crop, s3_scene,
                                                                                     tmp_path):
    """An archive's item as object storage holds it: the JSON an object, the PAN's href relative to it, the MS's an
    s3:// URL. The scene store holds the pixels of the plain s3:// ingest and records the item."""
    import json

    import boto3
    import zarr

    item = {"type": "Feature", "stac_version": "1.0.0", "id": "LC08-crop", "collection": "landsat-c2-l1",
            "geometry": None, "properties": {"datetime": "2015-08-04T16:20:00Z"}, "links": [],
            "assets": {"pan": {"href": "pan.tif", "type": "image/tiff; application=geotiff"},
                       "ms": {"href": s3_crop["ms"], "type": "image/tiff; application=geotiff"}}}
    boto3.client("s3").put_object(Bucket=BUCKET, Key="inputs/item.json", Body=json.dumps(item).encode())
    out = url("stac", "scene.zarr")
    summary = run_cli(["ingest", "--stac", url("inputs", "item.json"), "--pan-asset", "pan", "--ms-asset", "ms",
                       "--sensor", "Landsat8", "--band-names", *BAND_NAMES, "--out", out])
    assert summary["scene_store"] == out and summary["stac"]["item_id"] == "LC08-crop"
    assert summary["stac"]["assets"]["pan"]["href"] == s3_crop["pan"]   # resolved against the item's URL
    ours, plain = zarr.open_group(zarr_store(out), mode="r"), zarr.open_group(zarr_store(s3_scene), mode="r")
    for name in ("pan", "ms"):
        np.testing.assert_array_equal(ours[name][...], plain[name][...])
    assert ours.attrs["content_sha256"] == plain.attrs["content_sha256"]
    assert ours.attrs["stac"]["item"] == url("inputs", "item.json")


def test_a_stac_item_missing_from_the_bucket_is_named(s3, capsys):
    from flows.cli import EXIT_BAD_INPUT, main

    missing = url("inputs", "no-such-item.json")
    assert main(["ingest", "--stac", missing, "--pan-asset", "pan", "--ms-asset", "ms",
                 "--out", url("stac", "never.zarr")]) == EXIT_BAD_INPUT
    assert missing in the_error(capsys)
    assert not keys("stac/never.zarr")


def test_a_training_store_is_built_on_and_read_from_s3_like_a_local_one(s3, landsat_scene, tmp_path):
    from ssdiff_model.data.catalogue import landsat8_source
    from tiling.stores.training import TrainingStore, build_training_store

    source = landsat8_source(landsat_scene["B8"].parent)
    options = dict(family="r2", validation=0.5, regions=2, stride=128)
    local = build_training_store([source], tmp_path / "train.zarr", **options)
    remote = build_training_store([source], url("train", "landsat.zarr"), **options)
    assert remote["counts"] == local["counts"] and remote["counts"]["train"] > 0
    here, there = TrainingStore(tmp_path / "train.zarr"), TrainingStore(url("train", "landsat.zarr"))
    for side in ("train", "validation"):
        for name in ("pan", "ms"):
            np.testing.assert_array_equal(here.group[side][name][...], there.group[side][name][...])
    assert not keys("train/.landsat.zarr.lock")


def test_the_standard_aws_variables_are_mapped_for_zarr_and_gdal():
    import rasterio

    from tiling import objstore

    with environment(AWS_ENDPOINT_URL="http://127.0.0.1:9000", AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s",
                     AWS_REGION="eu-central-1", AWS_ENDPOINT_URL_S3=None, AWS_MAX_ATTEMPTS="7"):
        options = objstore.storage_options("s3://bucket/key.zarr")
        assert (options["endpoint_url"], options["key"], options["secret"]) == ("http://127.0.0.1:9000", "k", "s")
        assert options["client_kwargs"]["region_name"] == "eu-central-1"
        assert options["config_kwargs"]["retries"] == {"max_attempts": 7, "mode": "standard"}
        with objstore.gdal_env():
            config = rasterio.env.getenv()
            # plain http, path-style, the endpoint without its scheme, as GDAL's /vsis3/ wants them
            assert (config["AWS_HTTPS"], config["AWS_VIRTUAL_HOSTING"]) == ("NO", "FALSE")
            assert config["AWS_S3_ENDPOINT"] == "127.0.0.1:9000"
    assert objstore.is_url("s3://b/k") and objstore.is_url("https://host/x.tif") and not objstore.is_url("/tmp/x")
    assert objstore.sibling("s3://b/out/m.zarr", ".m.zarr.lock") == "s3://b/out/.m.zarr.lock"
    assert objstore.name("s3://b/out/m.zarr/") == "m.zarr"
