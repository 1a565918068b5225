"""Offline Motif (Klissarov et al. 2023, arXiv 2310.00166, sections 2-3): a Bradley-Terry reward
model fitted once on an LLM's preferences over caption pairs (`rogueray fit-reward`), then used
frozen during RL with Motif's transformation. This module owns the fitted model's file format
(`save_fitted` / `load_fitted`) and the `motif` reward model that reads it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from reward_models.base import FrozenRewardModel, check_option
from reward_models.config import MOTIF_QUANTILES
from reward_models.ranking import ScalarRewardNet
from reward_models.text_encoder import encode_captions

FORMAT = "rogueray-motif-reward"
FORMAT_VERSION = 1
QUANTILE_LEVELS = MOTIF_QUANTILES
"""The levels whose normalised-reward quantiles a fitted model carries: 0.05, 0.10, ..., 0.95,
as Motif's train_norm_quantiles.csv (its eps_threshold_quantile must be one of them)."""
NET_OPTIONS = ("embed_dim", "channels", "text_dim", "head_sizes")


MIN_TELLING_STD = 0.01
"""A raw reward whose standard deviation over the training captions is below this barely tells
them apart: under Bradley-Terry, a reward difference of 0.01 moves a preference by 0.25 points
(sigmoid(0.01) = 0.5025). Normalised by that std, its float noise would still become rewards."""


class MotifFileError(ValueError):
    """A fitted Motif reward file that is missing, unreadable or not one; the message names the
    path and what to do."""


@dataclass(frozen=True)
class FittedReward:
    """What `rogueray fit-reward` saves.

    net_options: ScalarRewardNet's keyword arguments; net: its state dict (CPU tensors).
    mean, std: the raw reward's mean and standard deviation over every caption occurrence in the
    training pairs (two per pair, so frequency-weighted, as Motif's reward_mean / reward_var).
    quantiles: QUANTILE_LEVELS -> that quantile (numpy's linear rule) of the normalised reward
    (raw - mean) / std over the distinct captions of the training pairs.
    info: provenance (dataset, label group, split, epochs, metrics), plain data.
    """

    net_options: dict[str, Any]
    net: dict[str, torch.Tensor]
    mean: float
    std: float
    quantiles: dict[float, float]
    info: dict[str, Any]

    def build_net(self) -> ScalarRewardNet:
        """The network with the fitted weights, in eval mode with gradients off."""
        net = ScalarRewardNet(**self.net_options)
        net.load_state_dict(self.net)
        net.eval()
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        return net


def save_fitted(path: str | Path, fitted: FittedReward) -> None:
    """Write `fitted` to `path` (torch.save of plain data, loadable with weights_only=True),
    atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "net_options": {k: list(v) if isinstance(v, tuple) else v
                        for k, v in fitted.net_options.items()},
        "net": {k: v.detach().cpu() for k, v in fitted.net.items()},
        "mean": float(fitted.mean),
        "std": float(fitted.std),
        "quantiles": {f"{level:.2f}": float(value) for level, value in fitted.quantiles.items()},
        "info": fitted.info,
    }  # fmt: skip
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_fitted(path: str | Path) -> FittedReward:
    """Read a file `save_fitted` wrote. Raises MotifFileError naming the path when it is missing,
    not a torch file, not a fitted Motif reward, of a newer format, or inconsistent."""
    path = Path(path)
    hint = "make one with `rogueray fit-reward DATASET` (README, section Offline Motif)"
    if not path.is_file():
        raise MotifFileError(f"fitted Motif reward {str(path)!r} does not exist; {hint}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reason the file does not load goes to the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise MotifFileError(
            f"{str(path)!r} is not a readable fitted Motif reward ({first}); {hint}"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MotifFileError(f"{str(path)!r} is not a fitted Motif reward file; {hint}")
    if int(data.get("version", 0)) > FORMAT_VERSION:
        raise MotifFileError(
            f"{str(path)!r} has format version {data['version']}; this rogueray reads up to "
            f"{FORMAT_VERSION} (upgrade rogueray, or fit the reward again)"
        )
    try:
        fitted = FittedReward(
            net_options={k: tuple(v) if isinstance(v, list) else v
                         for k, v in data["net_options"].items()},
            net=dict(data["net"]),
            mean=float(data["mean"]),
            std=float(data["std"]),
            quantiles={round(float(k), 2): float(v) for k, v in data["quantiles"].items()},
            info=dict(data.get("info", {})),
        )  # fmt: skip
        if not (np.isfinite(fitted.mean) and fitted.std > 0):
            raise ValueError(f"normalisation mean {fitted.mean}, std {fitted.std}")
        fitted.build_net()
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise MotifFileError(
            f"{str(path)!r} is a damaged fitted Motif reward ({first}); {hint}"
        ) from None
    return fitted


def barely_fitted(fitted: FittedReward) -> str | None:
    """Why `fitted` rewards little more than noise (its raw reward's std below MIN_TELLING_STD,
    typically when the judge called most pairs ties), or None."""
    if fitted.std >= MIN_TELLING_STD:
        return None
    pairs, ties = fitted.info.get("train_pairs"), fitted.info.get("train_ties")
    judged = (
        f"; the judge called {ties} of its {pairs} training pairs ties" if ties and pairs else ""
    )
    return (
        f"its raw reward hardly differs between captions (std {fitted.std:.2g}, under "
        f"{MIN_TELLING_STD:g}{judged}), so its normalised reward is mostly noise"
    )


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def motif_transform(raw: np.ndarray, mean: float, std: float, epsilon: float) -> np.ndarray:
    """Motif's reward before count scaling: z = (raw - mean) / std, kept where z > epsilon,
    else 0 (Motif section 3; M:SF/algorithms/appo/learner.py). float32 [N] -> float32 [N]."""
    z = (np.asarray(raw, np.float64) - mean) / std
    return np.where(z > epsilon, z, 0.0).astype(np.float32)


class MotifRewardModel(FrozenRewardModel):
    """`motif`: the fitted reward of `path`, frozen. r_int(c) = z if z > eps else 0, with
    z = (r(c) - mean) / std and eps the fitted file's `quantile` of z over the distinct training
    captions. It never trains and wants no labels.

    Count scaling (Motif's division by N(c)^beta, N counted within the episode) is not applied
    here: the learner applies N_ep^-reward.count_exponent to every reward model's output
    (learner/reward.py), so it is applied exactly once, with beta = reward.count_exponent
    (Motif used 3). Raises MotifFileError (bad file) or ValueError (quantile not a level).
    """

    label_kind: ClassVar[str] = "pair"

    def __init__(self, *, path: str | None = None, quantile: float = 0.5, device: str = "cpu"):
        check_option("path", bool(path), path, "the path of a fitted Motif reward file")
        levels = ", ".join(f"{q:.2f}" for q in QUANTILE_LEVELS)
        level = round(float(quantile), 2)
        ok = level in QUANTILE_LEVELS and abs(level - quantile) < 1e-9
        check_option("quantile", ok, quantile, f"one of {levels}")
        self.path = str(path)
        self.fitted = load_fitted(self.path)
        self.sha256 = file_sha256(self.path)
        self.quantile = level
        self.epsilon = self.fitted.quantiles[level]
        self.device = torch.device(device)
        self.net = self.fitted.build_net().to(self.device)

    @torch.no_grad()
    def raw_rewards(self, captions: Sequence[str]) -> np.ndarray:
        """The fitted network's r(caption), float32 [N]."""
        if not len(captions):
            return np.zeros(0, np.float32)
        tokens = torch.from_numpy(encode_captions(captions)).to(self.device)
        return self.net(tokens).float().cpu().numpy()

    def _unique_rewards(self, captions: list[str]) -> np.ndarray:
        raw = self.raw_rewards(captions)
        return motif_transform(raw, self.fitted.mean, self.fitted.std, self.epsilon)

    def state_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "quantile": self.quantile}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore; refuses a checkpoint made with a different fitted file."""
        saved = state.get("sha256")
        if saved is not None and saved != self.sha256:
            raise ValueError(
                f"the run was trained with a fitted Motif reward of sha256 {saved[:12]}..., but "
                f"{self.path} now has {self.sha256[:12]}...; point reward_model.path at the "
                "original file or start the run afresh (--fresh)"
            )
