"""A Ray cluster of two nodes on this machine with no shared disk: every store is on the S3-compatible server.

`ray start --head` and `ray start --address` as a second node, each with its own temp folder and one CPU, with
the token authentication Ray 2.60 turns on for the clusters it starts (one shared token, as on a real cluster).
A sharpen run with two actors puts one on each node, and the mosaic's provenance names the node of every actor.
Stopping the second node's Ray mid-run (its raylet and everything it started, as `ray stop` on that node does):
the run finishes on the head, and the mosaic equals the undisturbed run's bit for bit.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT_ROOT
from objstore_server import (  # noqa: F401 - fixtures
    RUN,
    TILES,
    free_port,
    local_run,
    s3,
    s3_crop,
    s3_scene,
    small_crop,
    url,
    wait_for_a_tile,
)

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).with_name("ray")


def processes_naming(text: str) -> list[int]:
    """Pids of this machine's processes whose command line contains ``text``, and of all their descendants (a
    node's actors are its raylet's children, and name no folder)."""
    parents, found = {}, set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.add(int(entry.name))
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    grown = True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        grown = bool(children)
        found |= children
    return sorted(found)


class TwoNodes:
    """A head and a worker node, each its own `ray start` with its own temp folder (short: Ray's socket paths must
    fit in 107 bytes), stopped by killing what names that folder: never `ray stop`, which would stop every Ray on
    the machine."""

    def __init__(self):
        self.port = free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "PYTHONPATH": str(PROJECT_ROOT), "RAY_USAGE_STATS_ENABLED": "0",
                    # shards of 2 x 2 tiles: four pieces of work for two actors (one shard would be one call)
                    "SSDIFF_SHARD_PIXELS": "64"}
        self.head = tempfile.mkdtemp(prefix="rh")
        self.worker = tempfile.mkdtemp(prefix="rw")
        self.address = f"127.0.0.1:{self.port}"

    def start(self, head: tuple[str, ...] = ("--num-cpus=1",), worker: tuple[str, ...] | None = ("--num-cpus=1",)):
        """The head, and the worker node unless ``worker`` is None (``add_worker`` starts it later)."""
        self._ray_start("--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.head}", *head)
        if worker is not None:
            self.add_worker(*worker)

    def add_worker(self, *options: str):
        """The second node joins, as an autoscaler's new node would."""
        self._ray_start(f"--address={self.address}", f"--temp-dir={self.worker}", *options)

    def _ray_start(self, *args: str):
        done = subprocess.run([str(RAY), "start", *args, "--disable-usage-stats"], env=self.env, capture_output=True,
                              text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    def stop_node(self, folder: str, sig=signal.SIGKILL):
        for pid in processes_naming(folder):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def node_ids(self) -> dict[str, str]:
        """node id -> 'head' or 'worker'."""
        script = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
                  "print(json.dumps({n['NodeID']: n['NodeManagerAddress'] + ':' + str(n['NodeManagerPort']) "
                  "for n in ray.nodes() if n['Alive']}))") % self.address
        done = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def close(self):
        for folder in (self.worker, self.head):
            self.stop_node(folder)
        time.sleep(1)
        for folder in (self.worker, self.head):
            self.stop_node(folder)


@pytest.fixture
def cluster():
    nodes = TwoNodes()
    try:
        yield nodes
    finally:
        nodes.close()


@pytest.fixture
def two_nodes(cluster):
    cluster.start()
    return cluster


def sharpen(cluster: TwoNodes, scene: str, mosaic: str, checkpoint, log: Path, run=RUN,
            **env: str) -> subprocess.Popen:
    out = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "sharpen", str(scene), "--out", str(mosaic),
                             "--checkpoint", str(checkpoint), *run, "--ray-address", cluster.address],
                            env={**cluster.env, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                            start_new_session=True)


def finish(job: subprocess.Popen, log: Path, timeout: float = 600) -> dict:
    try:
        code = job.wait(timeout=timeout)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    text = log.read_text()
    assert code == 0, text[-4000:]
    start = 0 if text.startswith("{") else text.index("\n{") + 1   # Ray's own lines may come before and after
    return json.JSONDecoder().raw_decode(text[start:])[0]


def test_one_actor_on_each_node_and_the_provenance_names_them(two_nodes, s3, s3_scene, local_run, checkpoint,
                                                              tmp_path):
    import xarray as xr

    from tiling import open_mosaic

    nodes = two_nodes.node_ids()
    assert len(nodes) == 2
    mosaic = url("two-nodes", "mosaic.zarr")
    summary = finish(sharpen(two_nodes, s3_scene, mosaic, checkpoint, tmp_path / "run.log"), tmp_path / "run.log")
    assert summary["sharpened"] == TILES
    with xr.open_zarr(mosaic) as opened:
        np.testing.assert_array_equal(opened.hrms.values, local_run["hrms"])
    actors = open_mosaic(mosaic).attrs["ray_actors"]
    assert {actor["node"] for actor in actors} == set(nodes), actors
    assert all(actor["node_address"] in nodes.values() for actor in actors), actors


def test_a_node_stopped_mid_run_leaves_the_run_to_the_other_and_the_same_mosaic(two_nodes, s3, s3_scene, local_run,
                                                                              checkpoint, tmp_path):
    import xarray as xr

    from tiling import missing_tiles

    mosaic, log = url("node-lost", "mosaic.zarr"), tmp_path / "run.log"
    job = sharpen(two_nodes, s3_scene, mosaic, checkpoint, log)
    wait_for_a_tile(job, mosaic, log)   # both actors at work and one tile written: then the worker node goes
    two_nodes.stop_node(two_nodes.worker)
    summary = finish(job, log)
    # the worker node's actor died holding work: the head's actor did it again
    assert summary["batches_retried"] >= 1, summary
    assert summary["sharpened"] + summary["tiles_already_done"] <= TILES and not missing_tiles(mosaic)
    with xr.open_zarr(mosaic) as opened:
        np.testing.assert_array_equal(opened.hrms.values, local_run["hrms"])


# ---- the pool grows and shrinks with the cluster ------------------------------------------------------------------

# Tiles of 64 px, one per call, sampled by a real shipped model: long enough on one CPU for a node to join.
GROWING = ["--tile", "64", "--halo", "16", "--seed", "0", "--steps", "4", "--batch-size", "1", "--no-progress"]


def test_without_actors_the_pool_grows_onto_a_node_that_joins_mid_run(cluster, scene_store, tmp_path):
    """No --actors: one actor on the head's one CPU, and one waiting (the demand an autoscaler answers). A node
    that joins mid-run gets it, and the mosaic names actors on both nodes."""
    cluster.start(worker=None)
    mosaic, log = tmp_path / "mosaic.zarr", tmp_path / "run.log"
    job = sharpen(cluster, scene_store, mosaic, "ssdiff-landsat-r2", log, run=GROWING)
    wait_for_a_tile(job, mosaic, log)
    cluster.add_worker("--num-cpus=1")
    summary = finish(job, log)
    assert summary["sharpened"] == summary["tiles_total"]
    assert len({actor["node"] for actor in summary["actors"]}) == 2, summary["actors"]
    assert all(actor["threads"] == 1 for actor in summary["actors"]), "one thread count for every tile"


def test_with_gpu_workers_scaled_to_zero_the_run_waits_for_a_worker_instead_of_failing(cluster, scene_store,
                                                                                      tmp_path):
    """A head that runs no actors (num-cpus 0, as in infra/deploy/cluster*.yaml) and no worker yet: the pool asks
    for a GPU actor and waits; a GPU worker joins (declared with --num-gpus on this GPU-less machine, as an
    autoscaler would add one) and the run finishes on it."""
    cluster.start(head=("--num-cpus=0",), worker=None)
    mosaic, log = tmp_path / "mosaic.zarr", tmp_path / "run.log"
    job = sharpen(cluster, scene_store, mosaic, "ssdiff-landsat-r2", log, run=GROWING, SSDIFF_ACTOR_WAIT_S="600")
    deadline = time.monotonic() + 120
    while not mosaic.exists():   # the store is created before the pool asks for actors
        assert job.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(3)
    assert job.poll() is None, "the run waits for a worker: " + log.read_text()[-3000:]
    cluster.add_worker("--num-cpus=1", "--num-gpus=1")
    summary = finish(job, log)
    assert summary["sharpened"] == summary["tiles_total"]
    assert [actor["device"] for actor in summary["actors"]] == ["cpu"], summary["actors"]


def test_a_cluster_that_never_gets_a_worker_ends_with_one_line_and_exit_1(cluster, scene_store, tmp_path):
    from tiling import missing_tiles, mosaic_grid

    cluster.start(head=("--num-cpus=0",), worker=None)
    mosaic, log = tmp_path / "mosaic.zarr", tmp_path / "run.log"
    job = sharpen(cluster, scene_store, mosaic, "ssdiff-landsat-r2", log, run=GROWING, SSDIFF_ACTOR_WAIT_S="5")
    assert job.wait(timeout=300) == 1, log.read_text()[-3000:]
    errors = [line for line in log.read_text().splitlines() if line.startswith("ssdiff sharpen: error:")]
    assert len(errors) == 1 and "no sharpening actor could be placed in 5 s" in errors[0], errors
    assert "0 CPUs and 0 GPUs" in errors[0] and "rerun" in errors[0]
    assert len(missing_tiles(mosaic)) == len(mosaic_grid(mosaic)), "the store is there, for a rerun to finish"
