"""Builds the annotator and its reward model from the run config, and runs the annotator in this
process (serial mode: a thread with its own event loop) or as an async Ray actor."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from annotator.annotator import Annotator
from annotator.label_store import LabelStore
from annotator.prompts import classification_prompt, ranking_prompt
from cluster.config import RunConfig
from reward_models import REWARD_MODELS, RewardModel, make_reward_model, reward_model_options

DEFAULT_MODEL = "smollm2-135m"
SMALL_TEXT_NETWORK = {  # reward_model.width=small; options a model does not take are dropped
    "embed_dim": 16,
    "channels": 32,
    "text_dim": 64,
    "mlp_sizes": (128, 128),
    "head_sizes": (64, 128),
}


def wants_annotator(config: RunConfig) -> bool:
    return REWARD_MODELS[config.reward_model.name].wants_labels


def build_reward_model(config: RunConfig) -> RewardModel:
    """The configured reward model, given only the options it accepts."""
    rm = config.reward_model
    allowed = reward_model_options(rm.name)
    candidates = {
        "lr": rm.learning_rate,
        "batch_size": rm.batch_size,
        "steps_per_label_batch": rm.steps_per_label_batch,
        "switch_dataset_size": rm.switch_dataset_size,
        "normalize": rm.normalize,
        "device": rm.device,
        "seed": config.seed,
    }
    if rm.threshold is not None:
        candidates["threshold"] = rm.threshold
    if rm.width == "small":
        candidates.update(SMALL_TEXT_NETWORK)
    return make_reward_model(rm.name, **{k: v for k, v in candidates.items() if k in allowed})


def annotation_kind(config: RunConfig) -> str:
    return (
        "ranking"
        if REWARD_MODELS[config.reward_model.name].label_kind == "pair"
        else "classification"
    )


def model_id(config: RunConfig) -> str:
    """What labels are keyed by: the model spec as configured (server URL + name for openai)."""
    ann = config.annotator
    if ann.backend == "openai":
        return f"{ann.base_url}#{ann.model}"
    return ann.model if ann.model == DEFAULT_MODEL else os.path.abspath(ann.model)


def label_store_path(config: RunConfig) -> Path:
    return Path(config.annotator.label_store or Path(config.run_dir) / "labels.sqlite")


def build_annotator(config: RunConfig) -> Annotator:
    from annotator.backends import make_backend

    ann = config.annotator
    kind = annotation_kind(config)
    probe = (
        ranking_prompt("a", "b", goal=ann.goal, style=ann.style)
        if kind == "ranking"
        else classification_prompt("a", goal=ann.goal, style=ann.style)
    )
    store = LabelStore(
        label_store_path(config), model_id=model_id(config), prompt_version=probe.version
    )
    if ann.backend == "openai":
        options = {"base_url": ann.base_url, "request_timeout": ann.request_timeout_s}
        if ann.model != DEFAULT_MODEL:
            options["model"] = ann.model
    else:
        options = {"model": ann.model}

    def backend_factory():
        return make_backend(ann.backend, **options)

    return Annotator(backend_factory, store, ann, kind=kind, seed=config.seed)


class AnnotatorThread:
    """Serial mode: the annotator's event loop in a daemon thread of this process."""

    def __init__(self, annotator: Annotator):
        self.annotator = annotator
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="annotator", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        async def body():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.annotator.run(self._stop)

        asyncio.run(body())

    def stop(self) -> None:
        """Stop and wait: the current LLM call (bounded by its timeout) or model load finishes
        first; a thread cut off inside torch at interpreter exit would abort the process."""
        if not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()


class AnnotatorActor:
    """Ray mode: an async actor (made remote in cluster/ray_runner.py). Its methods run on the
    actor's event loop beside the labelling task, so LLM calls never block intake."""

    def __init__(self, config: RunConfig):
        self.annotator = build_annotator(config)
        self._stop = asyncio.Event()
        self._task = None

    async def start(self, backlog: list | None = None) -> None:
        if backlog:
            self.annotator.restore_backlog(backlog)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.annotator.run(self._stop))

    async def submit(self, caption_counts: dict[str, int]) -> None:
        self.annotator.submit(caption_counts)

    async def poll_labels(self):
        return self.annotator.poll_labels()

    async def stats(self) -> dict[str, float]:
        return self.annotator.stats()

    async def top_captions(self, n: int):
        return self.annotator.top_captions(n)

    async def backlog(self) -> list:
        return self.annotator.backlog()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
