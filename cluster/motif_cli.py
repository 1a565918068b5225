"""Offline Motif on the command line (Klissarov et al. 2023, sections 2-3), three steps into one
dataset directory, then training with `reward_model.name=motif`:

    rogueray collect DATASET --env ID [--policy random|RUN_DIR|CHECKPOINT] --steps N
    rogueray annotate DATASET [--config FILE] [annotator.key=value ...] --pairs N
    rogueray fit-reward DATASET

Each shows a progress bar on a terminal (a progress line every 30 s in a log or a pipe,
cluster/progress.py), and stops cleanly on Ctrl-C after the chunk (or epoch) in progress: collect
and annotate continue where they stopped when run again."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from contextlib import contextmanager

from cluster.progress import NO_PROGRESS_HELP

COMMANDS = ("collect", "annotate", "fit-reward")


def add_parsers(sub) -> None:
    collect = sub.add_parser("collect", help="offline Motif 1/3: captions a policy sees, to disk")
    collect.add_argument("dataset", help="dataset directory (created; an existing one is resumed)")
    collect.add_argument("--env", default="NetHackScoreExtendedActions-v1", help="env id")
    collect.add_argument("--policy", default="random",
                         help="random (default), or a run directory / checkpoint file")  # fmt: skip
    collect.add_argument("--steps", type=int, default=100_000, help="env steps wanted in all")
    collect.add_argument("--seed", type=int, default=0)
    collect.add_argument("--num-envs", type=int, default=8)
    collect.add_argument("--unroll-length", type=int, default=128, help="steps per env per chunk")
    collect.add_argument("--max-episode-steps", type=int, default=None)
    collect.add_argument("--normalize-captions", action="store_true",
                         help="fold digits and whitespace, as env.normalize_captions")  # fmt: skip
    collect.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    annotate = sub.add_parser("annotate", help="offline Motif 2/3: LLM preferences on pairs")
    annotate.add_argument("dataset")
    annotate.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                          help="annotator settings as in training, e.g. annotator.backend=openai "
                          "(the 'annotator.' prefix may be left out)")  # fmt: skip
    annotate.add_argument("--config", help="a run config whose annotator.* section to use")
    annotate.add_argument("--pairs", type=int, default=5000, help="answered pairs wanted in all")
    annotate.add_argument("--chunk-size", type=int, default=64, help="pairs per committed chunk")
    annotate.add_argument("--seed", type=int, default=0)
    annotate.add_argument("--both-orders", action="store_true",
                          help="ask each pair in both orders and average (cancels a judge's "
                          "position bias; twice the questions)")  # fmt: skip
    annotate.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    fit = sub.add_parser("fit-reward", help="offline Motif 3/3: fit the reward model")
    fit.add_argument("dataset")
    fit.add_argument("--out", help="output directory (default DATASET/reward)")
    fit.add_argument("--model-id", help="label group to fit on (when the store has several)")
    fit.add_argument("--prompt-version", help="with --model-id")
    fit.add_argument("--val-fraction", type=float, default=0.2, help="held out (Motif: 0.2)")
    fit.add_argument("--epochs", type=int, default=10, help="Motif's README: 10")
    fit.add_argument("--min-steps", type=int, default=500,
                     help="Adam steps in all at the least, however few the pairs (500)")  # fmt: skip
    fit.add_argument("--batch-size", type=int, default=1024, help="pairs per step (Motif: 1024)")
    fit.add_argument("--lr", type=float, default=1e-4, help="Adam step (Motif's code: 1e-4)")
    fit.add_argument("--width", choices=("oni", "small"), default="oni",
                     help="text network size, as reward_model.width")  # fmt: skip
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


class _Stop:
    """SIGINT/SIGTERM -> stop after the current chunk; a second signal stops at once."""

    def __init__(self) -> None:
        self.stop = False

    def __call__(self) -> bool:
        return self.stop

    def handle(self, signum, frame) -> None:
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        name = signal.Signals(signum).name
        print(f"\n[rogueray] {name}: stopping after this chunk", file=sys.stderr, flush=True)


@contextmanager
def _stoppable():
    stop = _Stop()
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, stop.handle)
        except ValueError:  # not the main thread
            pass
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _progress(args, total: int, unit: str, desc: str):
    from cluster.progress import Progress

    return Progress(total, desc=desc, unit=unit, enabled=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    """Dispatch; errors the user can fix are raised (the CLI prints them, exit 2)."""
    return {"collect": _collect, "annotate": _annotate, "fit-reward": _fit}[args.command](args)


def _collect(args) -> int:
    from cluster.collect import collect

    with _stoppable() as stop, _progress(args, args.steps, "step", "collect") as bar:
        data = collect(args.dataset, env_id=args.env, policy=args.policy, steps=args.steps,
                       seed=args.seed, num_envs=args.num_envs, unroll_length=args.unroll_length,
                       max_episode_steps=args.max_episode_steps,
                       normalize_captions=args.normalize_captions, progress=bar.update,
                       done_before=bar.done_before, should_stop=stop)  # fmt: skip
    state = "stopped; run the same command to continue" if stop() else "done"
    print(f"[rogueray] collect {state}: {data.steps:,d} steps, {len(data.captions):,d} distinct "
          f"captions, {data.manifest['episodes']:,d} episodes finished in {data.path}")  # fmt: skip
    return 130 if stop() and data.steps < args.steps else 0


def annotate_config(args):
    """The run config whose annotator.* section `annotate` uses: --config (else the defaults),
    then the overrides (ConfigError on bad keys or values)."""
    from cluster.config import load_config
    from cluster.judge_cli import _overrides

    return load_config(args.config, _overrides(args.overrides))


def _annotate(args) -> int:
    from annotator.label_store import LabelStore
    from cluster.annotation import check_backend_installed, model_id
    from cluster.collect import load_dataset
    from cluster.motif_annotate import LABEL_STORE, plan_annotation

    if args.pairs < 1 or args.chunk_size < 1:
        raise ValueError("--pairs and --chunk-size must be >= 1")
    data = load_dataset(args.dataset)
    config = annotate_config(args)
    check_backend_installed(config)
    ann = config.annotator
    group = {"model_id": model_id(config), "prompt_version": _prompt_version(args, ann)}
    with LabelStore(data.path / LABEL_STORE, **group) as store:
        plan = plan_annotation(data.path, data.captions, store, pairs=args.pairs, seed=args.seed)
        if not plan.todo:  # said before the LLM loads (a local model takes a minute)
            print(_nothing_to_ask(plan, data.captions))
            return 0
        with _stoppable() as stop, _progress(args, args.pairs, "pair", "annotate") as bar:
            bar.done_before(min(plan.done_before, args.pairs))
            report = asyncio.run(_annotate_async(args, plan, store, config, bar.update, stop))
    state = "stopped; run the same command to continue" if report.stopped else "done"
    print(f"[rogueray] annotate {state}: {report.done:,d} of {args.pairs:,d} pairs answered "
          f"({report.labelled:,d} labelled now, {report.ties:,d} ties, {report.unknown:,d} "
          f"unknown, {report.failed:,d} failed requests) by {ann.backend} ({ann.model}), goal "
          f"{ann.goal}, into {data.path}")  # fmt: skip
    return 130 if report.stopped else 0


def _prompt_version(args, ann) -> str:
    """The label group's prompt version: the pair prompt's, marked when both orders are asked."""
    from annotator.prompts import ranking_prompt
    from cluster.motif_annotate import BOTH_ORDERS_SUFFIX

    version = ranking_prompt("a", "b", goal=ann.goal, style=ann.style).version
    return version + (BOTH_ORDERS_SUFFIX if args.both_orders else "")


def _nothing_to_ask(plan, captions: list[str]) -> str:
    from cluster.motif_annotate import candidate_captions

    model, version = plan.group
    by = f"by {model}, prompt {version}, in {plan.path}"
    tail = "nothing to ask, no LLM loaded"
    if plan.done_before >= plan.target:
        return (
            f"[rogueray] annotate: all {plan.target:,d} pairs wanted are labelled already "
            f"({plan.done_before:,d} answered {by}); {tail}; a larger --pairs asks more"
        )
    n = len(candidate_captions(captions))
    return (
        f"[rogueray] annotate: all {plan.done_before:,d} pairs of the dataset's {n:,d} captions "
        f"are labelled already ({by}); {tail}; `rogueray collect` more steps for more captions"
    )


async def _annotate_async(args, plan, store, config, progress, stop):
    from annotator.backends import make_backend
    from cluster.annotation import backend_options
    from cluster.motif_annotate import annotate_dataset

    ann = config.annotator
    backend = await asyncio.to_thread(make_backend, ann.backend, **backend_options(config))
    try:
        ready = getattr(backend, "wait_ready", None)
        if ready is not None:
            await ready(timeout=ann.request_timeout_s)
        return await annotate_dataset(
            plan, backend=backend, store=store, goal=ann.goal, style=ann.style,
            chunk_size=args.chunk_size, batch_size=ann.batch_size,
            max_retries=ann.max_retries, both_orders=args.both_orders, progress=progress,
            should_stop=stop,
        )  # fmt: skip
    finally:
        await backend.close()


CHANCE_ACCURACY = 0.55
"""fit-reward warns at or below this validation accuracy (over the non-tie pairs)."""


def _fit(args) -> int:
    from cluster.fit_reward import fit_reward

    if (args.model_id is None) != (args.prompt_version is None):
        raise ValueError("give --model-id and --prompt-version together")
    group = None if args.model_id is None else (args.model_id, args.prompt_version)
    with _progress(args, args.epochs, "epoch", "fit-reward") as bar:
        result = fit_reward(args.dataset, out=args.out, group=group,
                            val_fraction=args.val_fraction, epochs=args.epochs,
                            min_steps=args.min_steps,
                            batch_size=args.batch_size, lr=args.lr, width=args.width,
                            seed=args.seed, progress=bar.update)  # fmt: skip
    last = result.history[-1]
    print(f"[rogueray] fit-reward done: {result.train_pairs:,d} train / {result.val_pairs:,d} "
          f"validation pairs, {len(result.history)} epochs; last epoch train loss "
          f"{last['train_loss']:.4f}, validation loss {last['val_loss']:.4f}, validation "
          f"accuracy {last['val_accuracy']:.3f}; normalisation mean {result.mean:.4f} std "
          f"{result.std:.4f}, median threshold {result.quantiles[0.5]:.4f}; saved "
          f"{result.path} (use reward_model.name=motif reward_model.path={result.path})")  # fmt: skip
    if not last["val_accuracy"] > CHANCE_ACCURACY:  # nan too: no non-tie validation pair
        print(f"[rogueray] warning: validation accuracy {last['val_accuracy']:.3f} is chance "
              "level: this reward ranks captions no better than a coin. A judge that prefers "
              "whichever caption comes first (the embedded SmolLM2 does) needs `rogueray "
              "annotate DATASET --both-orders`; more pairs or --min-steps may help too")  # fmt: skip
    return 0
