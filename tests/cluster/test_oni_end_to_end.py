"""ONI end to end on CPU with the real embedded LLM (SmolLM2-135M through transformers): NetHack
runs label real captions, train each reward model and earn intrinsic reward; the label store
keeps every label; a resumed run asks the LLM nothing it already asked; an OpenAI-compatible
server that goes down or talks nonsense never stops training.

Each run is a real `rogueray train` process with a step budget no test reaches: the test waits
for the event it needs (labels stored, intrinsic reward earned, the outage seen), bounded by a
generous deadline, then stops the run with SIGTERM, the driver's clean stop."""

import sqlite3
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.cluster.train_process import TrainProcess
from tests.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.nle, pytest.mark.llm]

NEVER_REACHED = "total_env_steps=100000000"
SMALL = [
    "env.id=NetHackScoreExtendedActions-v1", "env.num_envs_per_worker=8", "rollout.num_workers=2",
    "rollout.unroll_length=16", "learner.batch_size=256", "model.hidden_size=64",
    "reward.intrinsic_coef=0.4", "annotator.backend=transformers", "annotator.batch_size=16",
    "reward_model.batch_size=32", "reward_model.steps_per_label_batch=4",
    "reward_model.label_batch_size=4", "log_interval_s=2",
]  # fmt: skip


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _scalars_so_far(run_dir: Path) -> dict[str, list[float]]:
    """What a running run has flushed to TensorBoard (its writer flushes every 2 minutes)."""
    try:
        return _scalars(run_dir)
    except Exception:  # noqa: BLE001 - no event file yet, or one being written
        return {}


def _store_rows(run_dir: Path, table: str) -> list[tuple]:
    with sqlite3.connect(run_dir / "labels.sqlite") as db:
        return db.execute(f"SELECT * FROM {table}").fetchall()


def _stored_so_far(run_dir: Path, table: str) -> int:
    try:
        return len(_store_rows(run_dir, table))
    except sqlite3.Error:  # the store or its table is not there yet
        return 0


def _label_times(run_dir: Path) -> dict[str, float]:
    with sqlite3.connect(run_dir / "labels.sqlite") as db:
        return dict(db.execute("SELECT caption, updated_at FROM caption_labels"))


def _labelled_since(run_dir: Path, moment: float) -> int:
    """Labels stored at or after `moment` (0 while the store is not there)."""
    try:
        return sum(t >= moment for t in _label_times(run_dir).values())
    except sqlite3.Error:
        return 0


def _wait_until_learned(run: TrainProcess, run_dir: Path, table: str) -> float:
    """Until labels are stored and the reward model has earned intrinsic reward in an episode:
    everything test_reward_model_learns_from_real_llm_labels asserts has happened."""

    def check() -> tuple[bool, str]:
        stored = _stored_so_far(run_dir, table)
        scalars = _scalars_so_far(run_dir)
        dataset = scalars.get("reward_model/dataset_size", [0])[-1]
        reward_mean = max(scalars.get("learner/reward_intrinsic_mean", [0]))
        intrinsic_return = max(scalars.get("episode/return_intrinsic", [0]))
        happened = run.training() and min(stored, dataset, reward_mean, intrinsic_return) > 0
        seen = (
            f"{stored} labels stored, reward model dataset {dataset}, max mean intrinsic reward "
            f"{reward_mean}, max intrinsic episode return {intrinsic_return}; {run.progress()}"
        )
        return happened, seen

    return wait_for(
        "labels stored and intrinsic reward earned", check, abort=run.exited, details=run.tail
    )


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
    args = [f"run_dir={run_dir}", f"reward_model.name={model}", *SMALL, *extra, NEVER_REACHED]
    table = "pair_labels" if model == "ranking" else "caption_labels"
    with TrainProcess(args, tmp_path / "train.log") as run:
        waited = _wait_until_learned(run, run_dir, table)
        assert run.stop() == 0, run.tail()
    scalars = _scalars(run_dir)
    stored = len(_store_rows(run_dir, table))
    print(
        f"{model}: learned after {waited:.0f} s; {stored} labels stored, labels_total "
        f"{scalars['annotator/labels_total'][-1]}, "
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
        resumed_at = time.time()
        with TrainProcess(args, tmp_path / "resume.log") as run:
            # The resumed annotator at work: a caption labelled after the restart (from the
            # checkpoint's backlog or newly seen) while the old ones were seen again.
            wait_for(
                "a label stored by the resumed run",
                lambda: (
                    run.training() and _labelled_since(run_dir, resumed_at) > 0,
                    f"{_labelled_since(run_dir, resumed_at)} labels since the restart; "
                    f"{run.progress()}",
                ),
                abort=run.exited,
                details=run.tail,
            )
            assert run.stop() == 0, run.tail()
        assert "resuming" in run.output()
        after = _label_times(run_dir)
        assert set(before) <= set(after)
        assert all(after[caption] == stamp for caption, stamp in before.items())


@pytest.fixture
def llm_server():
    """A fresh server per test (the model itself is loaded once per process). Stopping it waits
    for the requests it is still computing for a run that was stopped, so on a slow machine the
    next test's requests do not queue behind them."""
    from tests.doubles.openai_server import OpenAICompatServer, TransformersScorer
    from tests.doubles.shared_models import smollm2_transformers_backend

    server = OpenAICompatServer(TransformersScorer(smollm2_transformers_backend())).start()
    yield server
    server.stop()


def _openai_args(run_dir, server):
    return [
        f"run_dir={run_dir}", NEVER_REACHED, "mode=serial",
        "reward_model.name=hashing", *SMALL, "annotator.backend=openai",
        f"annotator.base_url={server.base_url}", "annotator.request_timeout_s=120",
        "annotator.max_backoff_s=1",
        "annotator.max_retries=1",
    ]  # fmt: skip


def test_openai_server_outage_does_not_stop_training(tmp_path, llm_server):
    run_dir = tmp_path / "outage"
    llm_server.stop()  # down from the start: the run must begin and go on without it
    restarted = []
    try:
        with TrainProcess(_openai_args(run_dir, llm_server), tmp_path / "train.log") as run:

            def waiting_for_the_llm() -> tuple[bool, str]:
                so_far = _scalars_so_far(run_dir)
                pending = max(so_far.get("annotator/pending", [0]))
                seen_down = min(so_far.get("annotator/backend_state", [0])) == -1.0
                return run.training() and pending > 0 and seen_down, (
                    f"{pending} captions waiting for the LLM, outage seen: {seen_down}; "
                    f"{run.progress()}"
                )

            wait_for(
                "training with captions waiting for the LLM while its server is down",
                waiting_for_the_llm,
                abort=run.exited,
                details=run.tail,
            )
            llm_server.start()
            restarted.append(time.time())
            wait_for(
                "a label stored after the server came back",
                lambda: (
                    _labelled_since(run_dir, restarted[0]) > 0,
                    f"{_labelled_since(run_dir, restarted[0])} labels since; {run.progress()}",
                ),
                abort=run.exited,
                details=run.tail,
            )
            assert run.stop() == 0, run.tail()
    finally:
        if not llm_server.running:
            llm_server.start()
    scalars = _scalars(run_dir)
    assert restarted, "the run ended before the server came back"
    # The outage was seen: a server down from the start is "not answering" (-1), not a
    # model still loading (0); no request is sent until it answers GET /v1/models.
    assert min(scalars["annotator/backend_state"]) == -1.0, scalars["annotator/backend_state"]
    assert max(scalars["annotator/backend_state"]) == 1.0
    labels = _label_times(run_dir)
    assert labels and min(labels.values()) >= restarted[0]  # labelled after it returned
    assert max(scalars["annotator/labels_total"]) > 0


def test_openai_garbage_is_counted_and_never_stored(tmp_path, llm_server):
    run_dir = tmp_path / "garbage"
    llm_server.garbage = "logprobs"
    try:
        with TrainProcess(_openai_args(run_dir, llm_server), tmp_path / "train.log") as run:

            def all_answers_invalid() -> tuple[bool, str]:
                rates = _scalars_so_far(run_dir).get("annotator/invalid_answer_rate", [0])
                return run.training() and max(rates) == 1.0, (
                    f"max invalid answer rate {max(rates)}; {run.progress()}"
                )

            wait_for(
                "answers that are all counted invalid",
                all_answers_invalid,
                abort=run.exited,
                details=run.tail,
            )
            assert run.stop() == 0, run.tail()
    finally:
        llm_server.garbage = None
    scalars = _scalars(run_dir)
    assert _store_rows(run_dir, "caption_labels") == []
    assert max(scalars["annotator/invalid_answer_rate"]) == 1.0
    assert scalars["annotator/labels_total"][-1] == 0
