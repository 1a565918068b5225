"""The end of `rogueray train`: the done line counts the labels the label store holds. The
annotator labels on after the run's last exchange (while the caption table is read and the final
checkpoint written) until it is stopped; a newcomer's default run said 64 labels while
`rogueray labels` counted 72 in its store. The driver's loop runs here on a runner double whose
annotator stores into a real SQLite label store at every call, to the end: no env, no Ray."""

from pathlib import Path

from actors.messages import CaptionLabel
from annotator.label_store import LabelStore, open_readonly
from annotator.metrics import LABELS_TOTAL, PENDING
from cluster.config import load_config
from cluster.console import done_line
from cluster.driver import _loop
from cluster.scaling import ScaleWatcher
from reward_models.base import DATASET_SIZE

CARTPOLE = Path(__file__).resolve().parents[2] / "configs" / "cartpole.yaml"


class LabellingRunnerDouble:
    """A `Runner` (cluster/runner.py) without workers or a learner: each collect brings 64 env
    steps, and its annotator stores one more label at each call the driver makes (a collect, an
    exchange, the caption table, the final checkpoint's learner state), as a real annotator
    labels beside the loop, until `stop_annotator`. Exchanges report the store's count then."""

    restarts, workers_alive, workers_waiting, updates_in_flight = 0, 1, 0, 0
    has_annotator = True

    def __init__(self, store_path: Path):
        self.store = LabelStore(store_path, model_id="double", prompt_version="v1")
        self.stopped = False
        self.handed = 0  # labels the learner's reward model has taken

    def _label_one(self) -> None:
        if not self.stopped:
            n = len(self.store.caption_labels())
            self.store.put_captions([CaptionLabel(f"message {n}", 1.0)])

    def _stats(self) -> dict[str, float]:
        return {LABELS_TOTAL: float(len(self.store.caption_labels())), PENDING: 3.0}

    def sync_weights(self) -> None:
        pass

    def collect(self):
        self._label_one()
        return [], [], 64

    def can_train(self) -> bool:
        return True

    def train(self, fragments) -> None:
        raise AssertionError("no fragments are collected, so none is trained on")

    def finished_updates(self, wait: bool = False) -> list:
        return []

    def exchange_labels(self, last: bool = False) -> list[dict[str, float]]:
        self._label_one()  # stored just before the poll: this exchange counts it
        self.handed = len(self.store.caption_labels())
        return [{**self._stats(), DATASET_SIZE: float(self.handed)}]

    def poll_notices(self) -> list[str]:
        return []

    def caption_table(self, n: int, wait: bool = True) -> list:
        self._label_one()  # after the last exchange
        return []

    def learner_state(self) -> dict:
        self._label_one()  # after the last exchange, before the final checkpoint is written
        return {"version": 0}

    def annotator_backlog(self) -> list:
        return []

    def annotator_state(self) -> dict:
        return {}

    def stop_annotator(self) -> dict[str, float]:
        self.stopped = True
        stats = self._stats()
        self.store.close()
        return stats


def test_the_done_line_counts_every_label_the_store_holds_at_the_end(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = load_config(
        CARTPOLE,
        [
            f"run_dir={run_dir}", "mode=serial", "total_env_steps=256", "log_interval_s=60",
            "reward_model.name=hashing", "reward.intrinsic_coef=0.4", "annotator.backend=rules",
        ],
    )  # fmt: skip
    runner = LabellingRunnerDouble(run_dir / "labels.sqlite")
    counters = {"env_steps": 0, "updates": 0, "episodes": 0, "incarnation": 0}

    result = _loop(config, runner, counters, ScaleWatcher(run_dir), False, True, 1)

    with open_readonly(run_dir / "labels.sqlite") as store:
        stored = sum(group[2] for group in store.groups())
    assert stored > runner.handed  # labels were stored after the run's last exchange
    assert result.labels == stored
    assert result.labels_in_reward_model == runner.handed  # the rest: handed over on resume
    assert f"{stored} labels ({runner.handed} in the reward model's dataset)" in done_line(result)
