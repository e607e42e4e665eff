"""The scheduled inbox flow with its inbox and outbox on object storage (s3://bucket/prefix), on the real S3 server
of tests/objstore_server.py: scene folders are common prefixes holding scene.json, the stores are written under the
outbox prefix, and the mosaic equals the same flow on local folders bit for bit.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import BAND_NAMES
from objstore_server import (  # noqa: F401 - fixtures
    BATCH,
    BUCKET,
    keys,
    s3,
    small_crop,
    upload,
    url,
)

DESCRIBED = {"pan": "pan.tif", "ms": "ms.tif", "sensor": "Landsat8", "band_names": list(BAND_NAMES)}


def put_text(key: str, text: str) -> str:
    import boto3

    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=text.encode())
    return url(key)


def drop_scene(prefix: str, crop: dict, described: dict | None = None) -> None:
    """The scene's files under ``prefix/``, scene.json last (as a sender must: it marks the scene complete)."""
    for name, path in crop.items():
        upload(path, f"{prefix}/{name}.tif")
    if described is not None:
        put_text(f"{prefix}/scene.json", json.dumps(described))


def test_an_s3_inbox_lists_complete_scene_folders_and_single_files(s3, small_crop):
    from flows.pipeline import find_new_scenes

    drop_scene("listing/inbox/ready", small_crop, DESCRIBED)
    drop_scene("listing/inbox/copying", small_crop)            # no scene.json yet: still arriving
    put_text("listing/inbox/wv3.mat", "not read while listing")
    put_text("listing/inbox/notes.txt", "neither a scene file nor a folder")
    scenes = find_new_scenes(url("listing", "inbox"), url("listing", "outbox"))
    assert scenes == [
        {"name": "ready", "pan": url("listing/inbox/ready/pan.tif"), "ms": [url("listing/inbox/ready/ms.tif")],
         "sensor": "Landsat8", "band_names": list(BAND_NAMES),
         "mosaic_store": url("listing/outbox/mosaics/ready.zarr"),
         "scene_store": url("listing/outbox/scenes/ready.zarr")},
        {"name": "wv3", "pan": url("listing/inbox/wv3.mat"), "ms": [],
         "mosaic_store": url("listing/outbox/mosaics/wv3.zarr"), "scene_store": url("listing/outbox/scenes/wv3.zarr")},
    ]


@pytest.mark.parametrize("path", ["../outside.tif", "/etc/hostname", "sub/../../outside.tif", "s3://other/pan.tif"])
def test_an_s3_scene_json_cannot_name_objects_outside_its_folder(s3, path):
    from flows.pipeline import find_new_scenes

    manifest = put_text("escape/inbox/scene/scene.json", json.dumps({"pan": path, "ms": "ms.tif"}))
    with pytest.raises(ValueError, match="outside the scene folder") as raised:
        find_new_scenes(url("escape", "inbox"), url("escape", "outbox"))
    assert manifest in str(raised.value)


def test_a_missing_s3_inbox_or_bucket_is_named(s3):
    from flows.pipeline import find_new_scenes, process_inbox

    with pytest.raises(FileNotFoundError, match="inbox folder does not exist"):
        find_new_scenes(url("no-such-prefix"), url("outbox"))
    with pytest.raises(ValueError, match="the bucket does not exist"):
        process_inbox.fn("s3://no-such-bucket/inbox", url("outbox"), checkpoint="unused")


@pytest.mark.slow
def test_the_inbox_flow_on_s3_equals_the_flow_on_local_folders(s3, small_crop, checkpoint, ray_local, tmp_path):
    import xarray as xr
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.testing.utilities import prefect_test_harness

    from flows.pipeline import process_inbox

    local_scene = tmp_path / "inbox" / "landsat"
    local_scene.mkdir(parents=True)
    for name, path in small_crop.items():
        shutil.copy(path, local_scene / f"{name}.tif")
    (local_scene / "scene.json").write_text(json.dumps(DESCRIBED))
    drop_scene("watch/inbox/landsat", small_crop, DESCRIBED)
    # Two actors of one CPU and batches of BATCH tiles in both runs: the same network calls (objstore_server.py).
    settings = {"checkpoint": str(checkpoint), "steps": 2, "seed": 0, "tile_size": 64, "halo": 16,
                "batch_size": BATCH, "actors": 2}
    inbox, outbox = url("watch", "inbox"), url("watch", "outbox")
    with prefect_test_harness(server_startup_timeout=120):
        local = process_inbox(str(tmp_path / "inbox"), str(tmp_path / "outbox"), **settings)
        remote = process_inbox(inbox, outbox, **settings)
        again = process_inbox(inbox, outbox, **settings)
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(sort=FlowRunSort.ID_DESC, limit=20)
    mosaic = url("watch", "outbox", "mosaics", "landsat.zarr")
    assert [(r["scene"], r["state"]) for r in local] == [("landsat", "COMPLETED")]
    assert [(r["scene"], r["state"], r["mosaic_store"]) for r in remote] == [("landsat", "COMPLETED", mosaic)]
    assert again == [], "a second run finds nothing new"
    watches = [r for r in runs if r.parameters.get("inbox") == inbox]
    assert len(watches) == 2 and all(r.state.is_completed() and r.parameters["outbox"] == outbox for r in watches)
    # The scene store is under the outbox prefix too, committed (its root metadata written last).
    assert "watch/outbox/scenes/landsat.zarr/zarr.json" in keys("watch/outbox/scenes/")
    with xr.open_zarr(mosaic) as opened, xr.open_zarr(tmp_path / "outbox" / "mosaics" / "landsat.zarr") as expected:
        np.testing.assert_array_equal(opened.hrms.values, expected.hrms.values)
        assert opened.hrms.rio.crs is not None and "quality" in opened.attrs
