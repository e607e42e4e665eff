"""The scheduled inbox deployment, run for real: a Prefect server, the deployment served by flows/serve.py, a run
triggered with `prefect deployment run`, and a scene dropped in the inbox coming out as a mosaic.

Everything is a real process: `prefect server start` on 127.0.0.1 (a free port, its database and PREFECT_HOME in
the test's tmp folder, so no other Prefect on the machine sees it), `python -m flows.serve` (which registers the
deployment and executes its runs in subprocesses, each starting its own local Ray), and the `prefect` CLI. Both
long-lived processes run in sessions of their own and are stopped at teardown, the test passing or not.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rioxarray  # noqa: F401  (the .rio accessor)
import xarray as xr
from conftest import BAND_NAMES, PROJECT_ROOT

# The timeout is a backstop for a hang (a server that never answers): the fixtures still stop every process.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

DEPLOYMENT = "ssdiff-watch-inbox/watch-inbox"
NEVER_DUE = "0 0 1 1 *"     # the schedule is real but does not fire during the test: only the triggered runs run
PREFECT = Path(sys.executable).with_name("prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, and everything it started (the served runs and their Ray)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)   # the session's stragglers: this test started them all
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def _started(command: list[str], env: dict, log: Path):
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            yield process
        finally:
            _stop(process)


def _wait_for(condition, what: str, timeout: float, process: subprocess.Popen, log: Path, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what}: {process.args[:3]} exited with {process.returncode}:\n"
                                 f"{log.read_text()[-3000:]}")
        result = condition()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def prefect_server(tmp_path):
    """A Prefect server of this test's own on 127.0.0.1; yields the environment that points clients at it."""
    home = tmp_path / "prefect-home"
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(PROJECT_ROOT),
               PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}")
    api = f"http://127.0.0.1:{port}/api"
    log = tmp_path / "server.log"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    command = [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    with _started(command, env, log) as server:
        # A new database is migrated at the first start: tens of seconds on two busy cores.
        _wait_for(healthy, "the Prefect server answering", 150, server, log)
        yield {"env": {**env, "PREFECT_API_URL": api}, "api": api, "tmp": tmp_path}


@pytest.fixture
def inbox_with_a_scene(crop, tmp_path) -> dict:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    scene = inbox / "landsat-crop"
    scene.mkdir(parents=True)
    shutil.copy(crop["pan"], scene / "pan.tif")
    shutil.copy(crop["ms"], scene / "ms.tif")
    (scene / "scene.json").write_text(json.dumps({"pan": "pan.tif", "ms": "ms.tif", "sensor": "Landsat8",
                                                  "band_names": list(BAND_NAMES)}))
    return {"inbox": inbox, "outbox": outbox, "mosaic": outbox / "mosaics" / "landsat-crop.zarr"}


def _client(api: str):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    @contextmanager
    def client():
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as c:
            yield c
    return client


def test_the_served_deployment_turns_a_scene_dropped_in_the_inbox_into_a_mosaic(prefect_server, inbox_with_a_scene,
                                                                              checkpoint):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.client.schemas.sorting import FlowRunSort

    env, tmp = prefect_server["env"], prefect_server["tmp"]
    client = _client(prefect_server["api"])
    serve_env = {**env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}     # pick a triggered run up within seconds
    serve = [sys.executable, "-m", "flows.serve", "--inbox", str(inbox_with_a_scene["inbox"]),
             "--outbox", str(inbox_with_a_scene["outbox"]), "--checkpoint", str(checkpoint), "--cron", NEVER_DUE]
    log = tmp / "serve.log"
    with _started(serve, serve_env, log) as served:
        def registered():
            with client() as c:
                try:
                    return c.read_deployment_by_name(DEPLOYMENT)
                except Exception:   # ObjectNotFound until serve has registered it
                    return None
        deployment = _wait_for(registered, "the deployment registered", 90, served, log)
        assert deployment.global_concurrency_limit.limit == 1    # the server holds the deployment's slots there
        assert deployment.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
        assert deployment.schedules[0].schedule.cron == NEVER_DUE

        # What an operator types; the small settings fit the test's tiny checkpoint and two cores.
        settings = {"steps": 2, "tile_size": 96, "halo": 16, "batch_size": 2, "actors": 1}
        triggered = subprocess.run([str(PREFECT), "deployment", "run", DEPLOYMENT, "--params", json.dumps(settings)],
                                   env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert triggered.returncode == 0, triggered.stdout + triggered.stderr
        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", triggered.stdout).group(1)

        def running():
            with client() as c:
                state = c.read_flow_run(run_id).state
            return state.is_running() or state.is_final()
        _wait_for(running, "the triggered run started", 60, served, log)
        # A second run that comes due while the first one runs is cancelled, not queued behind it.
        with client() as c:
            second = c.create_flow_run_from_deployment(deployment.id, parameters=settings).id

        def finished():
            with client() as c:
                runs = [c.read_flow_run(run_id), c.read_flow_run(second)]
            return runs if all(run.state.is_final() for run in runs) else None
        run, collided = _wait_for(finished, "the runs finished", 240, served, log, every=2)

    assert run.state.is_completed(), f"{run.state}: {log.read_text()[-3000:]}"
    assert collided.state.is_cancelled(), collided.state
    assert run.parameters == {**deployment.parameters, **settings}
    assert run.parameters["inbox"] == str(inbox_with_a_scene["inbox"])
    assert run.parameters["checkpoint"] == str(checkpoint)
    with client() as c:
        # explicit sort and limit: this server version rejects the client's null defaults
        (scene_run,) = c.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])), sort=FlowRunSort.ID_DESC, limit=10)
        result = c.read_flow_run(run_id).state
    assert scene_run.state.is_completed() and scene_run.parameters["mosaic_store"] == str(inbox_with_a_scene["mosaic"])

    mosaic = xr.open_zarr(inbox_with_a_scene["mosaic"], decode_coords="all")
    assert mosaic["hrms"].shape == (4, 256, 256) and np.isfinite(mosaic["hrms"].values).all()
    assert mosaic["hrms"].rio.crs.to_epsg() == 32616
    assert int(mosaic["done"].values.min()) > 0, "every tile finished"
    assert mosaic.attrs["prefect_flow_run"] == str(scene_run.id) and mosaic.attrs["steps"] == 2
    assert result.is_completed()
