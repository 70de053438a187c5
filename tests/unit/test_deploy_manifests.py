"""The deployment files are valid and agree with each other and with the code.

- Kubernetes manifests (deploy/k8s) against the Kubernetes API's JSON schemas, offline and strict (unknown
  fields fail), with `kubernetes-validate`, which bundles them.
- KubeRay's RayCluster/RayJob: no package ships KubeRay's CRD schemas, so their KubeRay-level fields are
  checked against `KUBERAY_SCHEMA` below, written from the fields of KubeRay's ray.io/v1 CRDs that these
  manifests use (unknown fields fail there too); the pod templates inside them are Kubernetes
  PodTemplateSpecs and get the real schema.
- The Ray cluster launcher YAML (deploy/ray) against the schema Ray ships (`ray/autoscaler/ray-schema.json`)
  and Ray's own cross-field checks.
- The run configurations the manifests name load, and point at what the manifests define.
"""

from __future__ import annotations

import copy
import json
import shlex
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from controller.cluster.farm import expand
from mtr.config import load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
RAY = ROOT / "deploy" / "ray"
K8S_VERSION = "1.29"  # oldest Kubernetes these manifests are meant for (gRPC probes, autoscaling/v2)
IMAGE_ROOT = "/opt/mtr"  # where deploy/k8s/Dockerfile puts the repository

_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT = {"type": "object"}  # pod templates: checked separately against Kubernetes' PodTemplateSpec
_HEAD_GROUP = {
    "type": "object",
    "required": ["template"],
    "additionalProperties": False,
    "properties": {
        "rayStartParams": _STRINGS,
        "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
        "enableIngress": {"type": "boolean"},
        "headService": _OBJECT,
        "template": _OBJECT,
    },
}
_WORKER_GROUP = {
    "type": "object",
    "required": ["groupName", "template"],
    "additionalProperties": False,
    "properties": {
        "groupName": {"type": "string", "minLength": 1},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "numOfHosts": {"type": "integer", "minimum": 1},
        "idleTimeoutSeconds": {"type": "integer"},
        "suspend": {"type": "boolean"},
        "rayStartParams": _STRINGS,
        "template": _OBJECT,
    },
}
_CLUSTER_SPEC = {
    "type": "object",
    "required": ["headGroupSpec"],
    "additionalProperties": False,
    "properties": {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "autoscalerOptions": _OBJECT,
        "headServiceAnnotations": _STRINGS,
        "suspend": {"type": "boolean"},
        "headGroupSpec": _HEAD_GROUP,
        "workerGroupSpecs": {"type": "array", "items": _WORKER_GROUP},
    },
}
_METADATA = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
KUBERAY_SCHEMA = {
    "RayCluster": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": "RayCluster"},
            "metadata": _METADATA,
            "spec": _CLUSTER_SPEC,
        },
    },
    "RayJob": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": "RayJob"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["entrypoint"],
                "additionalProperties": False,
                "properties": {
                    "entrypoint": {"type": "string", "minLength": 1},
                    "runtimeEnvYAML": {"type": "string"},
                    "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
                    "shutdownAfterJobFinishes": {"type": "boolean"},
                    "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 0},
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "clusterSelector": _STRINGS,
                    "submitterPodTemplate": _OBJECT,
                    "entrypointNumCpus": {"type": "number"},
                    "entrypointNumGpus": {"type": "number"},
                    "entrypointResources": {"type": "string"},
                    "jobId": {"type": "string"},
                    "metadata": _STRINGS,
                    "suspend": {"type": "boolean"},
                    "rayClusterSpec": _CLUSTER_SPEC,
                },
            },
        },
    },
}


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> list[tuple[str, dict]]:
    """(file#index, document) of every Kubernetes object under deploy/k8s (run.yaml is an MTR config)."""
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "run.yaml":
            continue
        for index, document in enumerate(_documents(path)):
            assert {"apiVersion", "kind"} <= document.keys(), f"{path.name}#{index} is not a Kubernetes object"
            found.append((f"{path.name}#{index}", document))
    return found


def _one(kind: str, name: str | None = None) -> dict:
    matches = [d for _, d in _manifests() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def _pod_templates(document: dict) -> list[dict]:
    spec = document["spec"].get("rayClusterSpec", document["spec"])
    return [spec["headGroupSpec"]["template"], *(group["template"] for group in spec.get("workerGroupSpecs", []))]


def validate_manifest(document: dict) -> None:
    """Raise jsonschema.ValidationError if `document` breaks Kubernetes' (or, for KubeRay, the CRD's) schema."""
    if document["apiVersion"].startswith("ray.io/"):
        jsonschema.validate(document, KUBERAY_SCHEMA[document["kind"]])
        for template in _pod_templates(document):
            pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
            kubernetes_validate.validate(pod_template, K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.parametrize("where, document", _manifests(), ids=[where for where, _ in _manifests()])
def test_manifest_is_valid(where, document):
    validate_manifest(document)


def test_the_kinds_the_issue_asks_for_are_there():
    kinds = sorted({d["kind"] for _, d in _manifests()})
    assert {"RayCluster", "RayJob", "Deployment", "Service", "HorizontalPodAutoscaler"} <= set(kinds), kinds


@pytest.mark.parametrize(
    "kind, path, typo",
    [
        ("Deployment", ("spec", "template", "spec", "containers", 0), "imagePullPolice"),
        ("HorizontalPodAutoscaler", ("spec",), "minReplica"),
        ("RayCluster", ("spec", "workerGroupSpecs", 0), "minReplica"),
        ("RayJob", ("spec",), "shutdownAfterJobFinish"),
        ("RayCluster", ("spec", "headGroupSpec", "template", "spec", "containers", 0), "imagePullPolice"),
    ],
)
def test_a_misspelt_field_fails_validation(kind, path, typo):
    document = copy.deepcopy(next(d for _, d in _manifests() if d["kind"] == kind))
    node = document
    for key in path:
        node = node[key]
    node[typo] = "1"
    with pytest.raises(jsonschema.ValidationError, match=typo):
        validate_manifest(document)


def test_simulator_deployment_service_and_autoscalers_fit_together():
    deployment, service = _one("Deployment", "mtr-simulator"), _one("Service", "mtr-simulator")
    pod = deployment["spec"]["template"]
    assert service["spec"]["clusterIP"] == "None"  # headless: the name resolves to every pod
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports.keys()
    args = dict(arg.removeprefix("--").partition("=")[::2] for arg in container["args"])
    assert int(args["port"]) == ports["grpc"] and int(args["metrics-port"]) == ports["metrics"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    assert container["resources"]["requests"]["cpu"]  # an HPA on CPU utilization needs a request
    for path in K8S.glob("simulator-hpa*.yaml"):
        (hpa,) = _documents(path)
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mtr-simulator"}


def test_the_k8s_run_reaches_the_simulator_service_with_matching_settings():
    job = _one("RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:4] == ["python", "-m", "mtr.cli", "run"]
    config_path = Path(argv[argv.index("--config") + 1])
    config = load_config(ROOT / config_path.relative_to(IMAGE_ROOT))
    assert config.simulator_placement == "external"
    service = _one("Service", "mtr-simulator")
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert config.simulator.addresses == [f"mtr-simulator:{grpc_port}"]
    container = _one("Deployment", "mtr-simulator")["spec"]["template"]["spec"]["containers"][0]
    args = dict(arg.removeprefix("--").partition("=")[::2] for arg in container["args"])
    assert (int(args["world-seed"]), args["tools"]) == (config.world.seed, config.simulator.tools)
    head = _pod_templates(job)[0]["spec"]["containers"][0]  # the controller writes the run directory
    assert config.runs_dir in {mount["mountPath"] for mount in head["volumeMounts"]}
    assert config.rollout.num_gpus_per_worker == config.learner.num_gpus_per_rank == 1


def test_rayjob_and_raycluster_have_the_same_node_groups():
    cluster, job = _one("RayCluster")["spec"], _one("RayJob")["spec"]["rayClusterSpec"]
    groups = [g["groupName"] for g in cluster["workerGroupSpecs"]]
    assert groups == [g["groupName"] for g in job["workerGroupSpecs"]] == ["gpu", "simulator"]
    simulator = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "simulator")
    assert json.loads(json.loads(simulator["rayStartParams"]["resources"])) == {"simulator": 8}


def test_ray_cluster_launcher_yaml_passes_rays_schema_and_checks():
    from ray.autoscaler._private.util import prepare_config, validate_config

    cluster = yaml.safe_load((RAY / "cluster.yaml").read_text())
    schema = json.loads(resources.files("ray.autoscaler").joinpath("ray-schema.json").read_text())
    jsonschema.validate(cluster, schema)
    validate_config(prepare_config(copy.deepcopy(cluster)))  # head type exists, worker limits add up, ...
    broken = copy.deepcopy(cluster)
    broken["available_node_types"]["simulator"]["resource"] = {"simulator": 8}
    with pytest.raises(jsonschema.ValidationError, match="resource"):
        jsonschema.validate(broken, schema)


def test_the_cluster_run_config_asks_only_for_what_node_types_offer():
    cluster = yaml.safe_load((RAY / "cluster.yaml").read_text())
    offered = [node["resources"] for node in cluster["available_node_types"].values()]
    config = load_config(RAY / "run.yaml")
    assert config.simulator_placement == "ray"
    wanted = {"CPU": config.simulator.num_cpus_per_replica, **config.simulator.resources}
    assert any(all(node.get(k, 0) >= v for k, v in wanted.items()) for node in offered)
    for gpus in (config.rollout.num_gpus_per_worker, config.learner.num_gpus_per_rank):
        assert any(node.get("GPU", 0) >= gpus for node in offered)
    assert cluster["available_node_types"][cluster["head_node_type"]]["resources"] == {"CPU": 0}


def test_an_external_service_name_is_expanded_to_its_addresses():
    assert expand("localhost:50051") == ["127.0.0.1:50051"]
    assert expand("10.1.2.3:50051") == ["10.1.2.3:50051"]
    assert expand("[::1]:50051") == ["[::1]:50051"]
