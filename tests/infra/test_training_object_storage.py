"""``ssdiff train`` with everything on object storage, on the real S3 server of tests/objstore_server.py: the
training store in a bucket, Ray Train's checkpoints under an s3:// storage path (pyarrow configured from AWS_*), the
export written to s3://, and a rerun that resumes from the checkpoint in the bucket. The Ray Train workers get the
AWS_* variables through infra.ray_env: the shared local Ray may have started before the server existed.
"""
from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from objstore_server import keys, s3, url  # noqa: F401 - fixtures

TRAIN = ["--workers", "1", "--batch-size", "2", "--width", "16", "--checkpoint-every", "2", "--validate-every", "0",
         "--val-examples", "2", "--val-steps", "2", "--cpus-per-worker", "1"]


@pytest.fixture(scope="module")
def s3_training_store(s3, landsat_scene) -> str:
    from ssdiff_model.data.catalogue import landsat8_source
    from tiling.stores.training import build_training_store

    store = url("training", "landsat.zarr")
    build_training_store([landsat8_source(landsat_scene["B8"].parent)], store, family="r2", validation=0.5,
                         regions=2, stride=64)
    return store


@pytest.mark.slow
def test_train_reads_an_s3_store_checkpoints_to_s3_exports_there_and_resumes(ray_local, s3, s3_training_store,
                                                                             tmp_path):
    from infra.ray_env import forwarded_runtime_env
    from ssdiff_model.model.checkpoint import load_checkpoint
    from tiling import objstore

    assert forwarded_runtime_env()["env_vars"]["AWS_ENDPOINT_URL"] == s3.endpoint
    runs, export = url("runs"), url("models", "tiny.pt")
    command = ["train", "--store", s3_training_store, "--storage-path", runs, "--name", "tiny", *TRAIN]
    first = run_cli([*command, "--steps", "2", "--export", export])
    assert (first["start_step"], first["end_step"], first["resumed_from_step"]) == (0, 2, None)
    assert np.isfinite(first["final_metrics"]["loss"])
    assert first["checkpoint"].startswith(url("runs", "tiny", "checkpoint_")) and first["checkpoint"].endswith(
        "/model.pt")
    assert first["run_path"] == url("runs", "tiny")
    assert objstore.is_file(first["checkpoint"]), "Ray Train wrote its checkpoint into the bucket"
    assert not any(k.startswith("runs/") for k in keys("training/")), "nothing of the run beside the store"
    assert first["export"]["path"] == export and first["export"]["model_card"] == url("models", "tiny.md")
    assert {"models/tiny.pt", "models/tiny.md"} <= set(keys("models/"))
    with objstore.fetched(export) as local:
        exported = load_checkpoint(local)
    assert exported.train_state is None and exported.training["iterations"] == 2
    assert exported.training["store"]["path"] == "landsat.zarr"   # the store's name, not the bucket's URL

    # The same storage path and name resume from the checkpoint in the bucket.
    second = run_cli([*command, "--steps", "4"])
    assert (second["start_step"], second["end_step"], second["resumed_from_step"]) == (2, 4, 2)
    assert second["history"][0]["step"] == 3
    with objstore.fetched(second["checkpoint"]) as local:
        assert load_checkpoint(local).train_state["step"] == 4

    # A stopped run's furthest checkpoint in the bucket exports to local disk.
    latest = run_cli(["export-checkpoint", "--storage-path", runs, "--name", "tiny", "--out",
                      str(tmp_path / "latest.pt")])
    assert latest["checkpoint"] == second["checkpoint"]
    assert load_checkpoint(latest["path"]).training["iterations"] == 4 and (tmp_path / "latest.md").is_file()
