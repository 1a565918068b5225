"""The cluster launch files: the Ray cluster-launcher ones pass Ray 2.60's own preparation and
schema check (what `ray up` runs first), the KubeRay one has the groups and resources that
configs/cluster.yaml places its components by; the on-premises one (`local` provider) declares
them in its start commands; the KubeRay RayJob runs `rogueray train` on the RayCluster's groups;
and that config loads."""

import json
import os
import shlex
import subprocess
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


def test_on_premises_file_passes_rays_own_checks_and_declares_the_resources():
    """cluster/launch/local.yaml: the `local` provider (head_ip, worker_ips over SSH) with the
    AWS file's image and setup; its start commands declare what configs/cluster.yaml asks for."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((LAUNCH / "local.yaml").read_text())
    config = prepare_config(raw)
    validate_config(config)
    provider = config["provider"]
    assert provider["type"] == "local" and provider["head_ip"] and provider["worker_ips"]
    assert config["max_workers"] == len(provider["worker_ips"]) and config["auth"]["ssh_user"]
    aws = yaml.safe_load((LAUNCH / "aws.yaml").read_text())
    assert config["setup_commands"] == aws["setup_commands"]
    assert config["docker"] == aws["docker"] and config["file_mounts"] == aws["file_mounts"]
    assert "vllm" in " ".join(config["head_setup_commands"])  # the LLM runs on the head
    head, worker = (_declared(config[f"{kind}_start_ray_commands"]) for kind in ("head", "worker"))
    assert head == {PLACED["learner"]: 1, PLACED["llm"]: 1}
    assert worker == {PLACED["rollout"]: os.cpu_count()}  # one rollout worker per CPU


def _declared(commands: list[str]) -> dict:
    """The custom resources the `ray start` line declares, as a node's shell expands them (a shell
    function stands in for `ray` and prints the arguments it gets)."""
    start = next(c for c in commands if "ray start" in c)
    shown = subprocess.run(
        ["bash", "-c", 'ray() { printf "%s\\n" "$@"; }; ' + start],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    flag = next(a for a in shown.stdout.splitlines() if a.startswith("--resources="))
    return json.loads(flag.removeprefix("--resources="))


def test_kuberay_job_runs_rogueray_train_on_the_same_cluster(monkeypatch, capsys):
    """cluster/launch/kuberay-job.yaml: a RayJob whose cluster is kuberay.yaml's (plus a volume
    for the run), whose runtime env is valid and whose entrypoint `rogueray train` accepts."""
    from ray.runtime_env import RuntimeEnv

    from cluster.cli import main

    claim, job = yaml.safe_load_all((LAUNCH / "kuberay-job.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec, cluster = job["spec"], yaml.safe_load((LAUNCH / "kuberay.yaml").read_text())["spec"]
    assert spec["shutdownAfterJobFinishes"] and spec["submissionMode"] == "K8sJobMode"
    job_cluster = spec["rayClusterSpec"]
    assert job_cluster["workerGroupSpecs"] == cluster["workerGroupSpecs"]
    head, head_container = job_cluster["headGroupSpec"], cluster["headGroupSpec"]
    assert head["rayStartParams"] == head_container["rayStartParams"]
    container = head["template"]["spec"]["containers"][0]
    expected = head_container["template"]["spec"]["containers"][0]
    assert {k: container[k] for k in expected} == expected  # the RayCluster's head, plus:
    volume = head["template"]["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/home/ray/rogueray"  # where the image holds the code
    RuntimeEnv(**{**runtime_env, "working_dir": str(ROOT)})  # Ray's own check, on this copy
    args = shlex.split(spec["entrypoint"])
    assert args[:2] == ["rogueray", "train"]
    monkeypatch.chdir(ROOT)  # the job's working dir: the shipped copy of the repository
    assert main([*args[1:], "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["run_dir"].startswith(mount["mountPath"] + "/")  # outlives the cluster
    assert printed["rollout"]["node_resource"] == PLACED["rollout"]
