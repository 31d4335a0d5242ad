"""Static checks of the deployment files: launcher YAML against Ray's own schema, KubeRay
manifests, the Dockerfile and the version pins they must share with pyproject.toml."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
RAY_VERSION = "2.60.0"
RAY_IMAGE = f"rayproject/ray:{RAY_VERSION}-py311-gpu"


def _pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for dep in deps:
        m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(==|>=|~=)?\s*(.*)$", dep)
        pins[m.group(1).lower()] = (m.group(3) or "") + m.group(4)
    return pins


def test_pyproject_pins_match_the_images():
    pins = _pins()
    assert pins["ray"] == "==2.60.*"
    assert pins["torch"] == "==2.14.1"
    assert pins["torchvision"] == "==0.29.1"
    import ray

    assert ray.__version__.startswith("2.60."), "installed Ray differs from the pin used by the images"
    assert re.fullmatch(pins["ray"].removeprefix("==").replace(".", r"\.").replace("*", r"\d+"), RAY_VERSION)


def _launcher() -> dict:
    return yaml.safe_load((CLUSTER / "lrservice-aws.yaml").read_text())


def test_launcher_yaml_validates_against_rays_schema():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    assert schema["$schema"].startswith("http://json-schema.org/draft-07")
    config = _launcher()
    jsonschema.Draft7Validator(schema).validate(config)
    validate_config(config)  # Ray's own extra checks (head type, min/max workers)

    broken = json.loads(json.dumps(config))
    broken["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5  # must be an integer
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_launcher_has_cpu_head_and_gpu_workers_on_the_pinned_image():
    config = _launcher()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]["resources"]
    assert head.get("GPU", 0) == 0 and head["head"] == 1
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert workers and all(t["resources"]["GPU"] >= 1 and t["resources"]["gpu_worker"] == 1 for t in workers)
    assert config["docker"]["image"] == RAY_IMAGE
    assert any("pip install" in c and "lrservice" in c for c in config["setup_commands"])
    head_start = " ".join(config["head_start_ray_commands"])
    worker_start = " ".join(config["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head_start and "RAY_AUTH_MODE=token" in worker_start
    assert json.loads(re.search(r"--resources='([^']*)'", head_start).group(1)) == {"head": 1}
    assert json.loads(re.search(r"--resources='([^']*)'", worker_start).group(1)) == {"gpu_worker": 1}


def _kuberay(name: str) -> dict:
    return yaml.safe_load((CLUSTER / "kuberay" / name).read_text())


def _check_ray_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == RAY_VERSION
    head = spec["headGroupSpec"]
    head_resources = json.loads(json.loads(head["rayStartParams"]["resources"]))
    assert head_resources == {"head": 1}
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    groups = spec["workerGroupSpecs"]
    assert len(groups) >= 1
    for group in groups:
        assert json.loads(json.loads(group["rayStartParams"]["resources"])) == {"gpu_worker": 1}
        container = group["template"]["spec"]["containers"][0]
        gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
        assert gpus >= 1 and int(group["rayStartParams"]["num-gpus"]) == gpus
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for container in [head_container] + [g["template"]["spec"]["containers"][0] for g in groups]:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]


def test_kuberay_raycluster_manifest():
    doc = _kuberay("raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"]
    _check_ray_cluster_spec(doc["spec"])


def test_kuberay_rayjob_runs_lrservice_compare():
    doc = _kuberay("rayjob.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayJob"
    spec = doc["spec"]
    assert spec["entrypoint"].split()[:2] == ["lrservice", "compare"]
    assert "--config" in spec["entrypoint"].split()
    yaml.safe_load(spec["runtimeEnvYAML"])
    _check_ray_cluster_spec(spec["rayClusterSpec"])
    submitter_env = {e["name"] for e in spec["submitterPodTemplate"]["spec"]["containers"][0]["env"]}
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= submitter_env


def test_cluster_example_config_loads_and_uses_the_placement_resources():
    from lrservice.config import load_config

    config = load_config(CLUSTER / "compare-cluster.yaml")
    assert config.resources.worker_resource == "gpu_worker"
    assert config.resources.head_resource == "head"
    assert Path(config.compare.output_dir).is_absolute()


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "docker" / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_uses_the_pinned_ray_image_and_installs_lrservice():
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", RAY_IMAGE)
    runs = " && ".join(arg for kw, arg in instructions if kw == "RUN")
    assert re.search(r"pip install[^&]*\s\.(\s|$)", runs), runs
    assert f"'{RAY_VERSION}'" in runs
    copied = [arg.split()[-2] for kw, arg in instructions if kw == "COPY"]
    assert "lrservice" in copied and "pyproject.toml" in " ".join(a for k, a in instructions if k == "COPY")
    assert ("CMD" in {kw for kw, _ in instructions}) or ("ENTRYPOINT" in {kw for kw, _ in instructions})


def test_local_multinode_script_is_valid_bash_and_names_the_resources():
    script = CLUSTER / "local-multinode.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "--head" in text and """--resources='{"head": 1}'""" in text
    assert "--num-gpus=1" in text and """--resources='{"gpu_worker": 1}'""" in text
    assert "RAY_AUTH_MODE=token" in text
