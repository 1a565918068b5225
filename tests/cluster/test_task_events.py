"""Every actor of a Ray run is created without Ray's task events (cluster/placement.py,
NO_TASK_EVENTS): the GCS keeps ~3 KB per actor call, and a run calls its inference actor once per
env step of each worker, so gcs_server grew without end. Checked on the options the runner hands
to `ray.remote`, with Ray itself replaced (no cluster started)."""

from unittest import mock

from cluster import inference_pool, ray_runner
from cluster.config import load_config


def test_every_actor_of_a_run_records_no_task_events(tmp_path, monkeypatch):
    fake = mock.MagicMock()
    monkeypatch.setattr(ray_runner, "ray", fake)
    monkeypatch.setattr(inference_pool, "ray", fake)
    monkeypatch.setattr(ray_runner, "check_resources", lambda config: None)
    fake.get_runtime_context.return_value.get_node_id.return_value = "ab" * 28  # a node id
    config = load_config(
        None,
        [
            f"run_dir={tmp_path}",
            "mode=ray",
            "rollout.num_workers=2",
            "rollout.inference=shared",
            "reward_model.name=classification",
            "reward.intrinsic_coef=0.4",
        ],
    )
    runner = ray_runner.RayRunner(config, spec=mock.sentinel.spec)
    assert runner.annotator is not None and runner.inference is not None
    created = [call.kwargs for call in fake.remote.call_args_list]
    # the learner, the annotator, the workers' class and the inference actor
    assert len(created) == 4
    assert all(options.get("enable_task_events") is False for options in created), created
