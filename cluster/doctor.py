"""`rogueray doctor [CONFIG] [key=value ...]`: is this machine ready for that run? One line per
check, OK or FAIL with what to do: the pinned versions of torch, ray, nle and gymnasium, that the
run's env (and NLE) steps, which Ray the run would reach (a small local Ray is started only with
`--ray`), the GPUs torch sees, that the configured LLM backend answers a classification prompt
(and how fast), the embedded model's cache, and that TensorBoard logs can be written. Exit 0 when
every check passed, 1 when one failed, 2 when the config does not load."""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cluster.console import counted
from cluster.run_files import barely_fitted_notice

PINNED = ("torch", "ray", "nle", "gymnasium")
ENV_STEPS = 10
NLE_ENV = "NetHackScore-v0"


@dataclass
class Result:
    name: str
    ok: bool
    text: str

    def line(self) -> str:
        return f"{'OK  ' if self.ok else 'FAIL'} {self.name}: {self.text}"


class Failed(Exception):
    """A check's failure: the message says what is wrong and what to do."""


def add_parser(sub) -> None:
    doctor = sub.add_parser(
        "doctor", help="check this machine for a run: versions, env, Ray, GPU, LLM, TensorBoard"
    )
    doctor.add_argument(
        "config", nargs="?", help="YAML run config (default: the embedded NetHack run)"
    )
    doctor.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value", help="as for train"
    )
    doctor.add_argument(
        "--ray", action="store_true", help="start a small local Ray (or join ray_address) to list "
        "its resources; without it Ray is only imported",
    )  # fmt: skip
    doctor.add_argument(
        "--probe-timeout", type=float, default=300.0,
        help="seconds the LLM backend has to load and answer the probe (300)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from cluster.cli import _split_config_arg
    from cluster.config import ConfigError, load_config, shipped_config

    config_path, overrides = _split_config_arg(args.config, args.overrides)
    try:
        config = load_config(config_path or shipped_config("default.yaml"), overrides)
    except ConfigError as exc:
        print(f"rogueray: error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    checks = run_checks(config, start_ray=args.ray, probe_timeout_s=args.probe_timeout,
                        announce=lambda line: print(line, flush=True))  # fmt: skip
    for result in checks:
        print(result.line(), flush=True)
        failed += not result.ok
    if failed:
        print(f"[rogueray] doctor: {failed} check{'s' if failed > 1 else ''} failed")
        return 1
    print("[rogueray] doctor: all checks passed")
    return 0


def run_checks(config, *, start_ray: bool = False, probe_timeout_s: float = 300.0, announce=None):
    """Yield one Result per check, in order; a check that raises is a FAIL, never a crash.
    `announce(line)`, if given, is told before a check that takes long (a local LLM loading)."""
    checks: list[tuple[str, Callable[[], str]]] = [
        ("versions", check_versions),
        (f"env {config.env.id}", lambda: check_env(config.env.id)),
    ]
    if not _is_nethack(config.env.id):
        checks.append((f"NLE ({NLE_ENV})", lambda: check_env(NLE_ENV)))
    checks += [
        ("ray", lambda: check_ray(config, start=start_ray)),
        ("gpu", lambda: check_gpu(config)),
        ("llm backend", lambda: check_llm(config, probe_timeout_s)),
        ("model cache", lambda: check_model_cache(config)),
        ("tensorboard", check_tensorboard),
        ("run_dir", lambda: check_run_dir(config)),
    ]
    if config.reward_model.name == "motif":
        checks.append(("motif reward", lambda: check_motif_reward(config)))
    for name, check in checks:
        if name == "llm backend" and announce is not None and (line := _probe_notice(config)):
            announce(line)
        try:
            yield Result(name, True, check())
        except Failed as exc:
            yield Result(name, False, str(exc))
        except Exception as exc:  # noqa: BLE001 - every unexpected failure is reported, named
            first = str(exc).splitlines()[0] if str(exc) else ""
            yield Result(name, False, f"{type(exc).__name__}: {first}")


def _probe_notice(config) -> str | None:
    """What the llm check is about to do, when it takes more than a moment (a local model loads
    for tens of seconds on a laptop); None for no annotator and the rules judge."""
    from cluster.annotation import wants_annotator

    backend = config.annotator.backend
    if not wants_annotator(config) or backend == "rules":
        return None
    if backend == "openai":
        return f"[rogueray] doctor: asking {config.annotator.base_url} one question"
    model = f"{config.annotator.model} (annotator.backend={backend})"
    return f"[rogueray] doctor: loading {model} to ask it one question"


def _pins() -> dict[str, str]:
    """{package: specifier} from rogueray's installed metadata (pyproject.toml's dependencies)."""
    from packaging.requirements import Requirement

    pins = {}
    for text in metadata.requires("rogueray") or []:
        req = Requirement(text)
        if req.marker is None and req.name.lower() in PINNED:
            pins[req.name.lower()] = str(req.specifier)
    return pins


def check_versions() -> str:
    from packaging.specifiers import SpecifierSet

    try:
        pins = _pins()
    except metadata.PackageNotFoundError:
        raise Failed("rogueray is not installed: pip install -e '.[test]' in the clone") from None
    found, wrong = [], []
    for name in PINNED:
        spec = pins.get(name, "")
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} missing (wants {spec or 'any'})")
            continue
        if spec and not SpecifierSet(spec).contains(have, prereleases=True):
            wrong.append(f"{name} {have} (wants {spec})")
        else:
            found.append(f"{name} {have}")
    if wrong:
        fix = " ".join(
            f"'{n}{pins.get(n, '')}'" for n in PINNED if any(w.startswith(n + " ") for w in wrong)
        )
        raise Failed(f"{', '.join(wrong)}; run pip install {fix}")
    return ", ".join(found) + " (the pins of pyproject.toml)"


def _is_nethack(env_id: str) -> bool:
    from actors.envs import is_nethack

    try:
        return is_nethack(env_id)
    except ValueError:
        return False


def check_env(env_id: str) -> str:
    from actors.envs import make_env

    start = time.perf_counter()
    try:
        env = make_env(env_id, seed=0)
    except ValueError as exc:
        raise Failed(f"{exc}; set env.id to a registered id (docs/config.md)") from None
    try:
        env.reset()
        steps = 0
        for _ in range(ENV_STEPS):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            steps += 1
            if terminated or truncated:
                env.reset()
    finally:
        env.close()
    took = time.perf_counter() - start
    return f"made and stepped {steps} times in {took:.2f} s"


def check_ray(config, *, start: bool) -> str:
    import loky  # here, not at the top: time that every other command would pay

    from cluster.placement import cpus_needed, gpus_needed

    try:
        ray_version = metadata.version("ray")
        import ray
    except (ImportError, metadata.PackageNotFoundError) as exc:
        raise Failed(f"ray cannot be imported ({exc}); pip install -e '.[test]'") from None
    needs = f"the run needs {cpus_needed(config)} CPUs"
    gpus = gpus_needed(config)
    if gpus:
        needs += f" and {gpus:g} GPUs"
    where = f"joins {config.ray_address}" if config.ray_address else "starts a local Ray"
    if config.mode != "ray":
        where = "does not use Ray (mode=serial)"
    cores = loky.cpu_count()  # affinity and a container's CPU quota, not the host's cores
    if config.mode == "ray" and config.ray_address is None and cpus_needed(config) > cores:
        needs += (
            f", more than this machine's {cores} cores: the local Ray counts "
            f"{cpus_needed(config)} and its processes share the cores (it runs, more slowly)"
        )
    if not start:
        return f"ray {ray_version} imports; the run {where}; {needs} (--ray to start/join it)"
    from cluster.placement import start_ray

    small = config
    if config.ray_address is None:  # a small local Ray: this is a check, not the run
        small = replace(config, ray_num_cpus=max(1, cpus_needed(config)))
    started = start_ray(small, quiet=True)
    try:
        total = ray.cluster_resources()
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
    finally:
        if started:
            ray.shutdown()
    cpus, gpu_total = total.get("CPU", 0.0), total.get("GPU", 0.0)
    text = (
        f"ray {ray_version}; {where}: {nodes} node(s), {cpus:g} CPUs, {gpu_total:g} GPUs; {needs}"
    )
    if cpus < cpus_needed(config) or gpu_total < gpus:
        raise Failed(text + ": too few; lower rollout.num_workers or add nodes")
    return text


def check_gpu(config) -> str:
    import torch

    wants = [
        f"{key}={value}"
        for key, value in (
            ("learner.device", config.learner.device),
            ("reward_model.device", config.reward_model.device),
        )
        if str(value).startswith("cuda")
    ]
    if not torch.cuda.is_available():
        if wants:
            raise Failed(
                f"torch {torch.__version__} sees no CUDA device but the config asks for "
                f"{', '.join(wants)}; set them to cpu, or install a CUDA build of torch"
            )
        return f"no CUDA device visible to torch {torch.__version__}; the run uses the CPU"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{len(names)} CUDA device(s): {', '.join(names)}"


def check_llm(config, timeout_s: float) -> str:
    import asyncio

    from annotator.backends import make_backend
    from annotator.prompts import classification_prompt
    from cluster.annotation import backend_options, wants_annotator

    if not wants_annotator(config):
        return f"not used (reward_model.name={config.reward_model.name} takes no LLM labels)"
    ann = config.annotator
    notes = _before_the_probe(config)
    prompt = classification_prompt("You find a staircase down.", goal=ann.goal, style=ann.style)

    async def probe():
        first = time.perf_counter()  # a local model loads as it is made and on its first call
        backend = make_backend(ann.backend, **backend_options(config))
        try:
            (probs,) = await backend.choice_probs([prompt.messages], prompt.choices)
            if probs is None:
                return None, time.perf_counter() - first, None
            again = time.perf_counter()
            await backend.choice_probs([prompt.messages], prompt.choices)
            return probs, again - first, time.perf_counter() - again
        finally:
            await backend.close()

    try:
        probs, first_s, answer_s = asyncio.run(asyncio.wait_for(probe(), timeout_s))
    except TimeoutError:
        raise Failed(
            f"the {ann.backend} backend gave no answer within {timeout_s:g} s"
            + (f" ({'; '.join(notes)})" if notes else "")
            + "; check the server or model, or raise --probe-timeout"
        ) from None
    where = ann.base_url if ann.backend == "openai" else ann.model
    if probs is None:
        raise Failed(
            f"the probe request to the {ann.backend} backend ({where}) failed; check that the "
            "server runs at annotator.base_url and serves the model, or raise --probe-timeout"
        )
    if not probs:
        raise Failed(
            f"the {ann.backend} backend ({where}) answered the probe with no usable choice "
            f"({probs!r}); try annotator.style=reasoned or a larger model"
        )
    shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(probs.items()))
    return (
        f"{ann.backend} ({where}) answered a classification prompt in {answer_s:.2f} s "
        f"(the first answer, with loading: {first_s:.1f} s): {shown}"
    )


def _before_the_probe(config) -> list[str]:
    """Notes for the probe's messages; Failed where the backend cannot work (vLLM missing, a
    refused key) or where nothing listens at an OpenAI server's URL, found by one GET /models
    (a refused connection needs no probe's wait)."""
    from cluster.annotation import NothingListens, preflight, probe_server
    from cluster.config import ConfigError

    try:
        if config.annotator.backend == "openai":
            return probe_server(config, 5.0)
        return preflight(config)
    except NothingListens as exc:
        raise Failed(
            f"{exc}; start the server there (or wait until it has started), or point "
            "annotator.base_url at it"
        ) from None
    except ConfigError as exc:
        raise Failed(str(exc)) from None


def check_model_cache(config) -> str:
    from annotator import model_store
    from cluster.annotation import DEFAULT_MODEL, wants_annotator

    cache = model_store.default_cache_dir()
    target = cache / model_store.DEFAULT_MODEL_DIRNAME
    try:
        model_store.verify_cache(DEFAULT_MODEL, cache)
    except model_store.ModelStoreError as exc:
        raise Failed(str(exc)) from None
    uses = (
        wants_annotator(config)
        and config.annotator.backend in ("auto", "transformers", "vllm")
        and config.annotator.model == DEFAULT_MODEL
    )
    state = (
        f"the embedded model is converted in {target}"
        if model_store.default_model_converted()
        else f"the embedded model is not converted yet ({target}); the first run that uses it "
        "downloads and converts it (about a minute)"
    )
    return state + ("" if uses else " (this run does not use it)")


def check_motif_reward(config) -> str:
    """reward_model.name=motif: reward_model.path loads and tells captions apart."""
    from reward_models.motif import MotifFileError, load_fitted

    try:
        fitted = load_fitted((rm := config.reward_model).path or "")
    except MotifFileError as exc:
        raise Failed(str(exc)) from None
    if (notice := barely_fitted_notice(rm.path, fitted)) is not None:  # loads, rewards noise
        raise Failed(notice)
    pairs, eps = fitted.info.get("train_pairs", 0), fitted.quantiles[round(rm.quantile, 2)]
    threshold = f"threshold (quantile {rm.quantile:.2f}) {eps:.3f}"
    return f"{rm.path}: fitted on {counted(int(pairs), 'pair')}; {threshold}"


def check_tensorboard() -> str:
    from torch.utils.tensorboard import SummaryWriter

    with tempfile.TemporaryDirectory(prefix="rogueray-doctor-") as folder:
        writer = SummaryWriter(folder)
        writer.add_scalar("doctor/check", 1.0, 0)
        writer.close()
        events = list(Path(folder).glob("events.out.tfevents.*"))
        if not events or events[0].stat().st_size == 0:
            raise Failed("SummaryWriter wrote no event file; reinstall tensorboard")
    return "a SummaryWriter wrote an event file"


def check_run_dir(config) -> str:
    run_dir = Path(config.run_dir).expanduser()
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise Failed(f"{run_dir} cannot be written ({probe} is not writable); set run_dir=...")
    state = "exists" if run_dir.exists() else "will be created"
    return f"{run_dir} {state} and can be written"
