"""The deployment and cluster definitions name entrypoints that really exist and parse as their tools expect."""
from __future__ import annotations

import inspect
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INFRA = PROJECT_ROOT / "infra" / "deploy"


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load((INFRA / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def kuberay() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((INFRA / "cluster.yaml").read_text())}


def dockerfile() -> str:
    return (INFRA / "Dockerfile").read_text()


def docker_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile in order, continuation lines joined, ARG defaults substituted."""
    text = re.sub(r"\\\n\s*", " ", dockerfile())
    args, instructions = {}, []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        if instruction == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        instructions.append((instruction, rest))
    return instructions


def _deployment(prefect_yaml: dict, name: str) -> dict:
    (found,) = [d for d in prefect_yaml["deployments"] if d["name"] == name]
    return found


def test_the_scheduled_deployment_watches_the_inbox_on_a_cron_schedule(prefect_yaml):
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    watch = _deployment(prefect_yaml, "watch-inbox")
    flow = load_flow_from_entrypoint(str(PROJECT_ROOT / watch["entrypoint"]))
    from flows.pipeline import process_inbox

    assert flow.name == process_inbox.name == "ssdiff-watch-inbox"
    (schedule,) = watch["schedules"]
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])   # validates the expression
    assert cron.cron == "*/15 * * * *" and schedule["active"]
    # Every parameter is one the flow takes, and every parameter the flow requires is given.
    signature = inspect.signature(process_inbox.fn)
    assert set(watch["parameters"]) <= set(signature.parameters)
    required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
    assert required <= set(watch["parameters"])


def test_prefect_reads_the_deployment_file_as_written(prefect_yaml):
    # The model `prefect deploy` validates prefect.yaml with: a misspelt or misplaced key would be dropped silently.
    from prefect.cli.deploy._models import PrefectYamlModel

    parsed = PrefectYamlModel.model_validate(prefect_yaml)
    assert [d.name for d in parsed.deployments] == [d["name"] for d in prefect_yaml["deployments"]]
    for deployment in parsed.deployments:
        assert deployment.entrypoint and deployment.work_pool.name == "ssdiff-pool"


def _watch_concurrency(prefect_yaml):
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    return ConcurrencyLimitConfig(**_deployment(prefect_yaml, "watch-inbox")["concurrency_limit"])


def test_the_inbox_watch_runs_one_at_a_time_and_cancels_a_run_that_comes_due_meanwhile(prefect_yaml):
    # A poller: a run queued behind a long one would only find the inbox the running one is already emptying.
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.serve import watch_inbox_deployment

    concurrency = _watch_concurrency(prefect_yaml)    # validates the strategy's name too
    assert concurrency.limit == 1 and concurrency.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    served = watch_inbox_deployment("/in", "/out", "ckpt.pt")
    assert served.concurrency_limit == concurrency.limit
    assert served.concurrency_options.collision_strategy == concurrency.collision_strategy


def test_the_prefect_worker_joins_the_ray_cluster_of_the_cluster_file(prefect_yaml, kuberay):
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()["variables"]["properties"]
    cluster = kuberay["RayCluster"]
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    gcs_port = {port["name"]: port["containerPort"] for port in head["ports"]}["gcs"]
    for deployment in prefect_yaml["deployments"]:
        variables = deployment["work_pool"]["job_variables"]
        assert set(variables) <= set(template), "job variables a process worker does not take are ignored"
        host, port = variables["env"]["RAY_ADDRESS"].rsplit(":", 1)
        # KubeRay's Service for the head of a RayCluster is named <cluster>-head-svc.
        assert (host, int(port)) == (f"{cluster['metadata']['name']}-head-svc", gcs_port), deployment["name"]


def test_every_deployment_entrypoint_loads(prefect_yaml):
    from prefect.flows import Flow, load_flow_from_entrypoint

    for deployment in prefect_yaml["deployments"]:
        path, _, name = deployment["entrypoint"].partition(":")
        assert (PROJECT_ROOT / path).is_file(), deployment["entrypoint"]
        flow = load_flow_from_entrypoint(f"{PROJECT_ROOT / path}:{name}")
        assert isinstance(flow, Flow)
        assert set(deployment.get("parameters", {})) <= set(inspect.signature(flow.fn).parameters)


def test_serve_builds_the_same_scheduled_deployment():
    from flows.serve import WATCH_CRON, watch_inbox_deployment

    deployment = watch_inbox_deployment("/in", "/out", "ckpt.pt")
    assert deployment.entrypoint.endswith("flows/pipeline.py:process_inbox")
    assert deployment.schedules[0].schedule.cron == WATCH_CRON
    assert deployment.parameters == {"inbox": "/in", "outbox": "/out", "checkpoint": "ckpt.pt"}


def test_the_ray_cluster_has_gpu_workers_running_the_project_image(kuberay):
    cluster = kuberay["RayCluster"]
    image = re.search(r"-t (\S+) \.", dockerfile()).group(1)     # the tag the Dockerfile's build line gives
    assert cluster["spec"]["rayVersion"] == __import__("ray").__version__
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    (workers,) = cluster["spec"]["workerGroupSpecs"]
    worker = workers["template"]["spec"]["containers"][0]
    assert head["image"] == worker["image"] == image
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile(), re.M).group(1)
    assert head["workingDir"] == worker["workingDir"] == workdir


def test_the_ray_job_runs_the_real_reprocess_entrypoint(kuberay):
    from infra.reprocess import build_parser

    job = kuberay["RayJob"]
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == kuberay["RayCluster"]["metadata"]["name"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "infra.reprocess"]
    args = build_parser().parse_args(argv[3:])           # the arguments are the ones the entrypoint takes
    assert args.checkpoint and args.out_dir and args.scenes


def test_the_image_installs_every_package_and_the_console_script(prefect_yaml):
    text = dockerfile()
    for package in ("ssdiff_model", "tiling", "infra", "flows"):
        assert re.search(rf"^COPY {package} ", text, re.M), package
    workdir = re.search(r"^WORKDIR (\S+)", text, re.M).group(1)
    (pull,) = prefect_yaml["pull"]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == workdir
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["ssdiff"].partition(":")
    assert (module, function) == ("flows.cli", "main")
    assert callable(getattr(__import__(module, fromlist=[function]), function))
    assert "ray[default]" in text, "ray job submit needs the dashboard's job server"


@pytest.mark.parametrize("user_value, expected", [(None, 180), ("7", 7)])
def test_importing_flows_gives_the_ephemeral_prefect_server_time_to_migrate_a_new_database(user_value, expected):
    # Prefect's own 20 s ran out on a fresh PREFECT_HOME (its first start migrates the database) on 2 busy cores.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    if user_value is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = user_value
    code = ("import flows.cli\n"
            "from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as timeout\n"
            "print(timeout.value())")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         check=True)
    assert int(out.stdout.split()[-1]) == expected


def test_the_image_caches_its_dependencies_before_the_code_and_leaves_the_test_extras_out():
    steps = docker_instructions()
    copies = [i for i, (name, rest) in enumerate(steps) if name == "COPY"]
    code = [i for i in copies if re.match(r"(ssdiff_model|tiling|infra|flows) ", steps[i][1])]
    (pyproject,) = [i for i in copies if steps[i][1].split()[0] == "pyproject.toml"]
    (dependencies,) = [i for i, (name, rest) in enumerate(steps) if name == "RUN" and "-r /tmp/requirements" in rest]
    (project,) = [i for i, (name, rest) in enumerate(steps) if name == "RUN" and "--no-deps ." in rest]
    # Nothing a code edit changes may come before the dependency layer, or every edit reinstalls them all.
    assert pyproject < dependencies < min(code) and max(code) < project
    assert all(steps[i][1].split()[0] in ("pyproject.toml",) for i in copies if i < dependencies)
    assert "'dependencies'" in steps[dependencies][1], "the runtime dependencies, read from pyproject.toml"
    installs = " ".join(rest for name, rest in steps if name == "RUN")
    assert "[test]" not in installs and "optional-dependencies" not in installs and "pytest" not in installs


def test_the_image_installs_the_tested_torch_built_for_its_base_images_cuda(kuberay):
    steps = docker_instructions()
    (base,) = [rest for name, rest in steps if name == "FROM"]
    image = re.fullmatch(r"rayproject/ray:(?P<ray>[\d.]+)-py(?P<py>\d+)-(?P<cuda>cu\d+)", base)
    assert image, f"the base image names its CUDA explicitly: {base}"
    assert image["ray"] == kuberay["RayCluster"]["spec"]["rayVersion"] == __import__("ray").__version__
    assert image["py"] == "311"
    (torch_install,) = [rest for name, rest in steps if name == "RUN" and "download.pytorch.org" in rest]
    index = re.search(r"download\.pytorch\.org/whl/(cu\d+)", torch_install).group(1)
    assert index == image["cuda"], "torch built for another CUDA than the base image's"
    tested = re.search(r'"torch==([\d.]+)"', (PROJECT_ROOT / "Makefile").read_text()).group(1)
    pinned = set(re.findall(r"torch==([\d.]+)", " ".join(rest for name, rest in steps if name == "RUN")))
    assert pinned == {tested}, f"the image installs torch {pinned}, the project is tested with {tested}"


# ---- the cluster without a shared volume ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kuberay_objstore() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((INFRA / "cluster-objstore.yaml").read_text())}


def _containers(cluster: dict) -> list[dict]:
    pods = [cluster["spec"]["headGroupSpec"]] + cluster["spec"]["workerGroupSpecs"]
    return [container for pod in pods for container in pod["template"]["spec"]["containers"]]


def test_the_object_storage_cluster_shares_no_volume_and_takes_its_credentials_from_secrets(kuberay_objstore):
    cluster = kuberay_objstore["RayCluster"]
    pods = [cluster["spec"]["headGroupSpec"]] + cluster["spec"]["workerGroupSpecs"]
    assert not any(pod["template"]["spec"].get("volumes") for pod in pods), "no shared volume"
    for container in _containers(cluster):
        assert not container.get("volumeMounts")
        assert {"secretRef": {"name": "ssdiff-object-store"}} in container["envFrom"]   # the AWS_* variables
        env = {item["name"]: item for item in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"                               # one token on every node
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ssdiff-ray-token"
        assert not any("AWS_SECRET_ACCESS_KEY" in str(item.get("value", "")) for item in container["env"])
    (workers,) = cluster["spec"]["workerGroupSpecs"]
    assert workers["minReplicas"] == 0 and workers["maxReplicas"] > 1 and cluster["spec"]["enableInTreeAutoscaling"]
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_the_object_storage_job_reprocesses_a_bucket_prefix_with_a_growing_pool(kuberay_objstore):
    from infra.reprocess import build_parser

    job = kuberay_objstore["RayJob"]
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == kuberay_objstore["RayCluster"]["metadata"]["name"]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "infra.reprocess"]
    args = build_parser().parse_args(argv[3:])
    assert args.out_dir.startswith("s3://") and all(scene.startswith("s3://") for scene in args.scenes)
    (workers,) = kuberay_objstore["RayCluster"]["spec"]["workerGroupSpecs"]
    assert args.actors is None and args.max_actors == workers["maxReplicas"], "the pool grows with the workers"
