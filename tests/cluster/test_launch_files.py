"""The cluster launch files: the Ray cluster-launcher ones pass Ray 2.60's own preparation and
schema check (what `ray up` runs first), the KubeRay one has the groups and resources that
configs/cluster.yaml places its components by; and that config loads."""

import json
from pathlib import Path

import pytest
import yaml

from cluster.config import load_config

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "cluster" / "launch"
PLACED = {"learner": "rogueray_learner", "llm": "rogueray_llm", "rollout": "rogueray_rollout"}


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_ray_launcher_files_pass_rays_own_checks(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((LAUNCH / name).read_text())
    config = prepare_config(raw)
    validate_config(config)
    types = config["available_node_types"]
    assert config["head_node_type"] == "head" and types["head"]["resources"] == {"CPU": 0}
    for node_type, resource in PLACED.items():
        assert resource in types[node_type]["resources"]
    assert types["rollout"]["max_workers"] > types["rollout"]["min_workers"]  # autoscaled
    assert "vllm" in " ".join(types["llm"]["worker_setup_commands"])
    assert config["docker"]["image"].startswith("rayproject/ray:2.60.0-py311")


def test_kuberay_cluster_declares_the_same_groups():
    spec = yaml.safe_load((LAUNCH / "kuberay.yaml").read_text())
    assert (spec["apiVersion"], spec["kind"]) == ("ray.io/v1", "RayCluster")
    assert spec["spec"]["rayVersion"] == "2.60.0" and spec["spec"]["enableInTreeAutoscaling"]
    assert spec["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["spec"]["workerGroupSpecs"]}
    assert set(groups) == set(PLACED)
    for name, resource in PLACED.items():
        # KubeRay passes this string to `ray start --resources`: a quoted JSON object.
        declared = json.loads(json.loads(groups[name]["rayStartParams"]["resources"]))
        assert resource in declared
    gpu = [g for g in groups.values() if "nvidia.com/gpu" in str(g["template"])]
    assert sorted(g["groupName"] for g in gpu) == ["learner", "llm"]
    assert groups["rollout"]["maxReplicas"] > groups["rollout"]["minReplicas"]


def test_cluster_config_places_every_component(tmp_path):
    config = load_config(ROOT / "configs" / "cluster.yaml", [f"run_dir={tmp_path}"])
    assert config.ray_address == "auto"
    assert config.rollout.node_resource == PLACED["rollout"]
    assert config.learner.node_resource == PLACED["learner"]
    assert config.annotator.node_resource == PLACED["llm"]
    assert config.learner.device == "cuda" and config.annotator.num_gpus == 1
