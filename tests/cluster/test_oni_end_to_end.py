"""ONI end to end on CPU with the real embedded LLM (SmolLM2-135M through transformers): NetHack
runs label real captions, train each reward model and earn intrinsic reward; the label store
keeps every label; a resumed run asks the LLM nothing it already asked; an OpenAI-compatible
server that goes down or talks nonsense never stops training."""

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cluster.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.nle, pytest.mark.llm]

SMALL = [
    "env.id=NetHackScoreExtendedActions-v1", "env.num_envs_per_worker=8", "rollout.num_workers=2",
    "rollout.unroll_length=16", "learner.batch_size=256", "model.hidden_size=64",
    "reward.intrinsic_coef=0.4", "annotator.backend=transformers", "annotator.batch_size=16",
    "reward_model.batch_size=32", "reward_model.steps_per_label_batch=4", "log_interval_s=2",
]  # fmt: skip


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _store_rows(run_dir: Path, table: str) -> list[tuple]:
    with sqlite3.connect(run_dir / "labels.sqlite") as db:
        return db.execute(f"SELECT * FROM {table}").fetchall()


def _label_times(run_dir: Path) -> dict[str, float]:
    with sqlite3.connect(run_dir / "labels.sqlite") as db:
        return dict(db.execute("SELECT caption, updated_at FROM caption_labels"))


def _labelled_since(run_dir: Path, moment: float) -> bool:
    try:
        return any(t >= moment for t in _label_times(run_dir).values())
    except sqlite3.Error:  # the store is not there yet
        return False


@pytest.mark.ray
@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("hashing", ["mode=ray"]),
        (
            "classification",
            ["mode=serial", "reward_model.threshold=0.2", "reward_model.learning_rate=3e-3"],
        ),
        ("ranking", ["mode=serial", "reward_model.learning_rate=3e-3"]),
    ],
)
def test_reward_model_learns_from_real_llm_labels(tmp_path, model, extra):
    run_dir = tmp_path / model
    args = [f"run_dir={run_dir}", f"reward_model.name={model}", *SMALL, *extra]
    assert main(["train", "total_env_steps=12000", *args, "--quiet"]) == 0
    scalars = _scalars(run_dir)
    table = "pair_labels" if model == "ranking" else "caption_labels"
    stored = len(_store_rows(run_dir, table))
    print(
        f"{model}: {stored} labels stored, labels_total {scalars['annotator/labels_total'][-1]}, "
        f"dataset {scalars['reward_model/dataset_size'][-1]}, "
        f"max intrinsic return {max(scalars.get('episode/return_intrinsic', [0]))}, "
        f"mean intrinsic reward {max(scalars['learner/reward_intrinsic_mean'])}"
    )
    assert stored > 0
    assert stored >= scalars["annotator/labels_total"][-1]  # every label handed out is stored
    assert scalars["reward_model/dataset_size"][-1] > 0
    assert max(scalars["learner/reward_intrinsic_mean"]) > 0
    assert max(scalars.get("episode/return_intrinsic", [0])) > 0

    if model == "hashing":  # resume: nothing already labelled is asked again
        before = _label_times(run_dir)
        assert main(["train", "total_env_steps=20000", *args, "--quiet"]) == 0
        after = _label_times(run_dir)
        assert set(before) <= set(after)
        assert all(after[caption] == stamp for caption, stamp in before.items())


@pytest.fixture(scope="module")
def llm_server():
    from tests.doubles.openai_server import OpenAICompatServer, TransformersScorer
    from tests.doubles.shared_models import smollm2_transformers_backend

    server = OpenAICompatServer(TransformersScorer(smollm2_transformers_backend())).start()
    yield server
    server.stop()


def _openai_args(run_dir, server, steps):
    return [
        "train", f"run_dir={run_dir}", f"total_env_steps={steps}", "mode=serial",
        "reward_model.name=hashing", *SMALL, "annotator.backend=openai",
        f"annotator.base_url={server.base_url}", "annotator.request_timeout_s=5",
        "annotator.max_backoff_s=1",
        "annotator.max_retries=1", "--quiet",
    ]  # fmt: skip


def test_openai_server_outage_does_not_stop_training(tmp_path, llm_server):
    run_dir = tmp_path / "outage"
    llm_server.stop()  # down from the start: the run must begin and go on without it
    restarted = []

    def come_back_then_stop_the_run():
        llm_server.start()
        restarted.append(time.time())
        # The run goes on until a label written after the restart is in the store (or 120 s
        # pass), then stops as Ctrl-C would stop it: its length no longer races the annotator.
        deadline = time.time() + 120
        while time.time() < deadline and not _labelled_since(run_dir, restarted[0]):
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(6.0, come_back_then_stop_the_run)
    timer.start()
    try:
        assert main(_openai_args(run_dir, llm_server, 10_000_000)) == 0
    finally:
        timer.cancel()
        timer.join()
        if not llm_server.running:
            llm_server.start()
    scalars = _scalars(run_dir)
    assert restarted, "the run ended before the server came back"
    assert max(scalars["annotator/failed_requests"]) > 0  # the outage was seen
    labels = _label_times(run_dir)
    assert labels and min(labels.values()) >= restarted[0]  # labelled after it returned
    assert max(scalars["annotator/labels_total"]) > 0


def test_openai_garbage_is_counted_and_never_stored(tmp_path, llm_server):
    run_dir = tmp_path / "garbage"
    llm_server.garbage = "logprobs"
    try:
        assert main(_openai_args(run_dir, llm_server, 20000)) == 0
    finally:
        llm_server.garbage = None
    scalars = _scalars(run_dir)
    assert _store_rows(run_dir, "caption_labels") == []
    assert max(scalars["annotator/invalid_answer_rate"]) == 1.0
    assert scalars["annotator/labels_total"][-1] == 0
