"""Placement by custom node resources on a real two-node Ray cluster (two raylets on this
machine): rollout workers land on the node declaring `rogueray_rollout`, the learner on the one
declaring `rogueray_learner`; a resource no node declares is named before any actor starts."""

import pytest

from cluster.components import env_spec
from cluster.config import ConfigError, load_config

CARTPOLE = "configs/cartpole.yaml"


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "resources": {"rogueray_learner": 1}},
    )
    rollout = cluster.add_node(num_cpus=2, resources={"rogueray_rollout": 2})
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, rollout.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()


def _config(tmp_path, *extra):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return load_config(
        root / CARTPOLE,
        [f"run_dir={tmp_path}", "rollout.num_workers=2", "ray_address=auto", *extra],
    )


@pytest.mark.ray
@pytest.mark.slow
def test_components_land_on_the_nodes_that_declare_their_resource(tmp_path, two_nodes):
    import ray

    from cluster.ray_runner import RayRunner

    cluster, rollout_node = two_nodes
    config = _config(
        tmp_path, "rollout.node_resource=rogueray_rollout", "learner.node_resource=rogueray_learner"
    )
    runner = RayRunner(config, env_spec(config))
    try:
        runner.start()
        runner.sync_weights()
        fragments, _, steps = runner.collect()
        assert steps > 0
        runner.train(fragments * 2)  # CartPole's batch is two fragments
        assert runner.finished_updates(wait=True)

        def node_of(actor) -> str:
            return ray.get(
                actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
            )

        assert {node_of(w) for w in runner.workers.values()} == {rollout_node}
        assert node_of(runner.learner) == cluster.head_node.node_id
    finally:
        runner.close()


@pytest.mark.ray
@pytest.mark.slow
def test_a_resource_no_node_declares_is_named(tmp_path, two_nodes):
    from cluster.ray_runner import RayRunner

    config = _config(tmp_path, "learner.node_resource=rogueray_gpu_learner")
    with pytest.raises(ConfigError) as error:
        RayRunner(config, env_spec(config))
    message = str(error.value)
    assert "'learner.node_resource' is 'rogueray_gpu_learner'" in message
    assert "custom resources declared: rogueray_learner, rogueray_rollout" in message
    config = _config(tmp_path, "rollout.node_resource=rogueray_rollout", "rollout.num_workers=3")
    with pytest.raises(ConfigError, match="declaring 'rogueray_rollout' .* have 2 CPUs"):
        RayRunner(config, env_spec(config))
