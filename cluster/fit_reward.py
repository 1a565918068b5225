"""`rogueray fit-reward DATASET`: offline Motif's reward model (Klissarov et al. 2023, section 3;
Motif's scripts/train_reward.py) fitted on the pair labels `rogueray annotate` stored, with
reward_models/ranking.py's network and Bradley-Terry loss (ties are 0.5 targets; unknown pairs
are not in the label store, so never trained on).

- Split: a random `val_fraction` of the distinct pairs (seeded) is held out for validation.
- Training: `epochs` epochs of ceil(train pairs / batch_size) Adam steps, each on a random batch
  of distinct training pairs (RankingRewardModel's own steps), and at least `min_steps` steps in
  all: Motif's ~500k pairs make thousands of steps, while a few hundred pairs at batch 1024
  would make one step an epoch, ten in all, and leave the network where it started (loss ln 2).
  TensorBoard under `OUT/tensorboard`: fit/{train,val}_{loss,accuracy} per epoch.
- Ties in the figures (Motif, section 2: a tie's target is 0.5 for both captions): the loss is
  the cross-entropy over every pair, ties included; a tie's cross-entropy is ln 2 at the least
  (reached when both captions get the same reward), so a tie-heavy set's loss stays near ln 2
  however well the decided pairs are ranked. `loss_floor` is the least loss the targets allow
  (their mean binary entropy: ties x ln 2 / pairs for hard labels). The accuracy is over the
  decided (non-tie) pairs only: a tie has no right side (NaN when there is none).
- Stopping: `should_stop()` is asked before every step; a fit stopped after its first epoch
  saves the model as of the last finished epoch (info["stopped_after_epoch"]), one stopped
  earlier saves nothing.
- Normalisation: mean and (population) std of the raw reward over every caption occurrence in
  the training pairs (two per pair: frequency-weighted, as Motif's reward_mean / reward_var).
- Quantiles: the 0.05, ..., 0.95 quantiles (numpy's linear rule) of the normalised reward over
  the distinct captions of the training pairs, as Motif's train_norm_quantiles.csv. They are a
  field of the fitted file (`quantiles`), which `motif` reads; `OUT/quantiles.json` is a
  readable copy of that field.
Written: `OUT/motif_reward.pt` (reward_models/motif.py's format), quantiles.json, metrics.json."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actors.messages import PairLabel
from annotator.label_store import LabelStore, StoreInspector
from cluster.collect import DatasetError, load_dataset
from cluster.motif_annotate import LABEL_STORE
from reward_models.pair_sampling import pair_key

log = logging.getLogger(__name__)

REWARD_FILE = "motif_reward.pt"
SMALL = {"embed_dim": 16, "channels": 32, "text_dim": 64, "head_sizes": (64, 128)}
ONI = {"embed_dim": 32, "channels": 64, "text_dim": 128, "head_sizes": (256, 512)}


@dataclass
class FitPlan:
    """What a fit will do, known once the labels are read (before the first step)."""

    train_pairs: int
    val_pairs: int
    train_ties: int
    val_ties: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    min_steps: int
    lr: float
    width: str
    parameters: int
    device: str
    out: Path

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass
class FitResult:
    """`path` is None when nothing was saved (stopped before the first epoch ended)."""

    path: Path | None
    plan: FitPlan
    history: list[dict[str, float]]
    mean: float = float("nan")
    std: float = float("nan")
    quantiles: dict[float, float] | None = None
    val_loss_floor: float = float("nan")
    stopped: bool = False
    steps_done: int = 0

    @property
    def train_pairs(self) -> int:
        return self.plan.train_pairs

    @property
    def val_pairs(self) -> int:
        return self.plan.val_pairs


def choose_group(store_path: Path, group: tuple[str, str] | None) -> tuple[str, str]:
    """The (model id, prompt version) to fit on: `group`, or the store's only one with pair
    labels. DatasetError when there is none, or several and none was named."""
    if not store_path.is_file():
        raise DatasetError(
            f"{store_path} does not exist: no pairs were labelled; run `rogueray annotate "
            f"{store_path.parent}` first"
        )
    with StoreInspector(store_path) as inspector:
        groups = [(m, p) for m, p, _, pairs in inspector.groups() if pairs]
    if group is not None:
        if group not in groups:
            raise DatasetError(f"{store_path} has no pair labels for {group}; it has: {groups}")
        return group
    if not groups:
        raise DatasetError(f"{store_path} holds no pair labels; run `rogueray annotate` first")
    if len(groups) > 1:
        named = "; ".join(f"--model-id {m} --prompt-version {p}" for m, p in groups)
        raise DatasetError(f"{store_path} holds pair labels of several judges; choose: {named}")
    return groups[0]


def split_pairs(labels: list[PairLabel], val_fraction: float, seed: int):
    """Distinct pairs of different captions (the latest label of each), shuffled with `seed`
    and split into (train, validation); validation gets round(val_fraction * N) pairs."""
    latest = {pair_key(x.first, x.second): x for x in labels if x.first != x.second}
    pairs = list(latest.values())
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = int(round(val_fraction * len(pairs)))
    shuffled = [pairs[i] for i in order]
    return shuffled[n_val:], shuffled[:n_val]


def bt_metrics(raw_first: np.ndarray, raw_second: np.ndarray, preference: np.ndarray):
    """Bradley-Terry cross-entropy (mean over all N pairs, ties included) and accuracy over
    non-tie pairs (NaN when none) of rewards [N], [N] against preferences for the first [N]."""
    logits = np.stack([raw_first, raw_second], axis=1).astype(np.float64)
    log_p = logits - np.logaddexp(logits[:, 0], logits[:, 1])[:, None]
    loss = -(preference * log_p[:, 0] + (1 - preference) * log_p[:, 1]).mean()
    decided = preference != 0.5
    hits = (raw_first > raw_second) == (preference > 0.5)
    accuracy = float(hits[decided].mean()) if decided.any() else float("nan")
    return float(loss), accuracy


def ties(labels: list[PairLabel]) -> int:
    """Pairs whose target is exactly 0.5 (a tie): in the loss, not in the accuracy."""
    return sum(x.preference == 0.5 for x in labels)


def loss_floor(labels: list[PairLabel]) -> float:
    """The least mean Bradley-Terry cross-entropy these targets allow: their mean binary entropy
    (ln 2 for a tie, 0 for a 1 / 0 label); NaN for no labels."""
    if not labels:
        return float("nan")
    p = np.clip(np.array([x.preference for x in labels], np.float64), 1e-12, 1 - 1e-12)
    return float(-(p * np.log(p) + (1 - p) * np.log(1 - p)).mean())


def _rewards(model, labels: list[PairLabel]) -> tuple[np.ndarray, np.ndarray]:
    captions = sorted({c for x in labels for c in (x.first, x.second)})
    raw = dict(zip(captions, model.outputs(captions).numpy(), strict=True)) if captions else {}
    return (np.array([raw[x.first] for x in labels], np.float64),
            np.array([raw[x.second] for x in labels], np.float64))  # fmt: skip


def _evaluate(model, labels: list[PairLabel]) -> tuple[float, float]:
    if not labels:
        return float("nan"), float("nan")
    first, second = _rewards(model, labels)
    return bt_metrics(first, second, np.array([x.preference for x in labels]))


def statistics(model, train: list[PairLabel]) -> tuple[float, float, dict[float, float]]:
    """(mean, std, quantiles) as the module docstring defines them."""
    from reward_models.motif import QUANTILE_LEVELS

    first, second = _rewards(model, train)
    occurrences = np.concatenate([first, second])
    mean, std = float(occurrences.mean()), float(occurrences.std())
    std = std if std > 0 else 1.0
    captions = sorted({c for x in train for c in (x.first, x.second)})
    z = (model.outputs(captions).numpy().astype(np.float64) - mean) / std
    values = np.quantile(z, QUANTILE_LEVELS)
    return mean, std, {q: float(v) for q, v in zip(QUANTILE_LEVELS, values, strict=True)}


def fit_reward(
    dataset: str | Path,
    *,
    out: str | Path | None = None,
    group: tuple[str, str] | None = None,
    val_fraction: float = 0.2,
    epochs: int = 10,
    batch_size: int = 1024,
    min_steps: int = 500,
    lr: float = 1e-4,
    width: str = "oni",
    seed: int = 0,
    on_start: Callable[[FitPlan], None] = lambda plan: None,
    on_step: Callable[[int, float], None] = lambda epoch, loss: None,
    on_epoch: Callable[[dict[str, float]], None] = lambda row: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> FitResult:
    """Fit, evaluate and save (see the module docstring). `on_start(plan)` once the labels are
    read, `on_step(epoch, loss)` after each Adam step, `on_epoch(row)` after each epoch's
    validation; `should_stop()` before each step. Raises DatasetError (no dataset, no labels)
    and ValueError (bad option)."""
    bad = not 0.0 <= val_fraction < 1.0 or epochs < 1 or batch_size < 1
    if bad or width not in ("oni", "small"):
        raise ValueError("need 0 <= --val-fraction < 1, --epochs >= 1, --batch-size >= 1, "
                         "--width oni|small")  # fmt: skip
    if min_steps < 0:
        raise ValueError(f"need --min-steps >= 0; got {min_steps}")
    data = load_dataset(dataset)
    group = choose_group(data.path / LABEL_STORE, group)
    with LabelStore(data.path / LABEL_STORE, model_id=group[0], prompt_version=group[1]) as store:
        train, val = split_pairs(store.pair_labels(), val_fraction, seed)
    if not train:
        raise DatasetError(f"{data.path}: no pairs of two different captions to train on")
    model, options = _model(train, lr=lr, batch_size=batch_size, width=width, seed=seed)
    out = Path(out) if out is not None else data.path / "reward"
    steps = max(math.ceil(len(train) / batch_size), math.ceil(min_steps / epochs))
    plan = FitPlan(train_pairs=len(train), val_pairs=len(val), train_ties=ties(train),
                   val_ties=ties(val), epochs=epochs, steps_per_epoch=steps,
                   batch_size=batch_size, min_steps=min_steps, lr=lr, width=width,
                   parameters=sum(p.numel() for p in model.net.parameters()),
                   device=str(model.device), out=out)  # fmt: skip
    on_start(plan)
    history, kept, steps_done = _train(model, train, val, plan, on_step, on_epoch, should_stop)
    stopped = len(history) < epochs
    result = FitResult(None, plan, history, val_loss_floor=loss_floor(val), stopped=stopped,
                       steps_done=steps_done)  # fmt: skip
    if not history:
        return result
    if stopped:
        model.net.load_state_dict(kept)  # the last finished epoch's weights
    result.mean, result.std, result.quantiles = statistics(model, train)
    info = {"dataset": str(data.path.resolve()), "model_id": group[0], "prompt_version": group[1],
            "train_pairs": len(train), "val_pairs": len(val), "train_ties": plan.train_ties,
            "val_ties": plan.val_ties, "val_loss_floor": result.val_loss_floor,
            "epochs": epochs, "steps_per_epoch": steps, "lr": lr, "width": width,
            "batch_size": batch_size, "seed": seed, "history": history}  # fmt: skip
    if stopped:
        info["stopped_after_epoch"] = len(history)
    _save(out, model, options, result.mean, result.std, result.quantiles, info)
    result.path = out / REWARD_FILE
    return result


def _model(train, *, lr, batch_size, width, seed):
    from reward_models.ranking import RankingRewardModel

    options = dict(SMALL if width == "small" else ONI)
    model = RankingRewardModel(lr=lr, batch_size=batch_size, steps_per_label_batch=0,
                               switch_dataset_size=0, normalize=False, threshold=None,
                               seed=seed, **options)  # fmt: skip
    model.add_labels(train)  # stored only: steps_per_label_batch=0
    return model, options


def _train(model, train, val, plan: FitPlan, on_step, on_epoch, should_stop):
    """(history, the weights after the last finished epoch, Adam steps taken)."""
    import copy

    from torch.utils.tensorboard import SummaryWriter

    from reward_models.base import ACCURACY, LOSS

    history, kept, taken = [], None, 0
    with SummaryWriter(str(plan.out / "tensorboard")) as writer:
        for epoch in range(1, plan.epochs + 1):
            metrics = []
            for _ in range(plan.steps_per_epoch):
                if should_stop():
                    return history, kept, taken
                metrics.append(model.train_iteration())
                taken += 1
                on_step(epoch, metrics[-1][LOSS])
            row = {
                "epoch": epoch,
                "train_loss": float(np.mean([m[LOSS] for m in metrics])),
                "train_accuracy": _mean_of_finite([m.get(ACCURACY, np.nan) for m in metrics]),
            }
            row["val_loss"], row["val_accuracy"] = _evaluate(model, val)
            for key, value in row.items():
                if key != "epoch" and np.isfinite(value):
                    writer.add_scalar(f"fit/{key}", value, epoch)
            history.append(row)
            kept = copy.deepcopy(model.net.state_dict())
            log.info("fit-reward epoch %d: %s", epoch, row)
            on_epoch(row)
    return history, kept, taken


def _mean_of_finite(values: list[float]) -> float:
    """The mean of the batches' accuracies, leaving out a batch with no decided pair (NaN)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _save(out: Path, model, options, mean, std, quantiles, info) -> None:
    from reward_models.motif import FittedReward, save_fitted

    fitted = FittedReward(options, model.net.state_dict(), mean, std, quantiles, info)
    save_fitted(out / REWARD_FILE, fitted)
    readable = {f"{q:.2f}": v for q, v in quantiles.items()}
    (out / "quantiles.json").write_text(json.dumps(readable, indent=1) + "\n", encoding="utf-8")
    metrics = {"mean": mean, "std": std, **{k: v for k, v in info.items()}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
