"""A real S3-compatible server on 127.0.0.1 for the object-storage tests, and the scene they sharpen.

moto's standalone server speaks the S3 HTTP API: s3fs, botocore and GDAL's /vsis3/ talk to it as to AWS. The
fixtures are imported by the test modules that use them (``from objstore_server import s3, ...``). The server
and the scene in it live for the whole session: a client library caches its connections by endpoint (s3fs's file
systems, which ``xr.open_zarr("s3://...")`` uses as a user would), so every module must see the same endpoint.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ingest_args, landsat_crop, run_cli

moto_server = pytest.importorskip("moto.server")

BUCKET = "ssdiff-test"
SMALL = 128
TILES = 16
# Two actors of one CPU each in every run: torch's thread count changes the last bits of a network call. Batches of
# 3 tiles: the local run's pool calls (3 tiles each, 1 at the end) and the object store's (one call per shard)
# group the tiles differently, and still every network call holds 3 tiles.
BATCH = 3
RUN = ["--tile", "64", "--halo", "16", "--seed", "0", "--steps", "2", "--batch-size", str(BATCH), "--actors", "2",
       "--no-progress"]
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def environment(**values):
    before = {name: os.environ.get(name) for name in values}
    os.environ.update({name: value for name, value in values.items() if value is not None})
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class S3Server:
    """moto's threaded server on 127.0.0.1: its buckets live in this process, so stopping it and starting it
    again on the same port is an endpoint going down and coming back with its data."""

    def __init__(self):
        self.port = free_port()
        self.server = None
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self):
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture(scope="session")
def s3():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # one log line per request otherwise
    server = S3Server()
    server.start()
    with environment(AWS_ENDPOINT_URL=server.endpoint, AWS_MAX_ATTEMPTS="3", **AWS):
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        try:
            yield server
        finally:
            server.stop()


def url(*parts: str) -> str:
    return "/".join([f"s3://{BUCKET}", *parts])


def upload(path: Path, key: str) -> str:
    import boto3

    boto3.client("s3").upload_file(str(path), BUCKET, key)
    return url(key)


def keys(prefix: str) -> list[str]:
    import boto3

    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="session")
def small_crop(landsat_scene, tmp_path_factory) -> dict:
    return landsat_crop(landsat_scene, tmp_path_factory.mktemp("s3crop"), size=SMALL)


@pytest.fixture(scope="session")
def s3_crop(s3, small_crop) -> dict:
    return {name: upload(path, f"inputs/{name}.tif") for name, path in small_crop.items()}


@pytest.fixture(scope="module")
def local_run(small_crop, checkpoint, ray_local, tmp_path_factory) -> dict:
    """The same scene sharpened on local disk: what the object-store runs must equal bit for bit."""
    import xarray as xr

    folder = tmp_path_factory.mktemp("local")
    run_cli(ingest_args(small_crop, folder / "scene.zarr"))
    run_cli(["sharpen", str(folder / "scene.zarr"), "--out", str(folder / "mosaic.zarr"), "--checkpoint",
             str(checkpoint), *RUN])
    with xr.open_zarr(folder / "mosaic.zarr") as mosaic:
        return {"hrms": mosaic.hrms.values, "scene": folder / "scene.zarr"}


@pytest.fixture(scope="session")
def s3_scene(s3, s3_crop) -> str:
    scene = url("stores", "scene.zarr")
    summary = run_cli(ingest_args(s3_crop, scene))
    assert summary["scene_store"] == scene
    return scene


def wait_for_a_tile(job, mosaic, log: Path, timeout: float = 300) -> None:
    """Until the run has written its first tile (the job must still be running)."""
    from tiling import missing_tiles, mosaic_grid

    deadline = time.monotonic() + timeout
    while True:
        try:
            if len(missing_tiles(mosaic)) < len(mosaic_grid(mosaic)):
                return
        except ValueError:
            pass   # not created yet
        assert job.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no tile finished in time"
        time.sleep(0.05)
