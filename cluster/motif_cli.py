"""Offline Motif on the command line (Klissarov et al. 2023, sections 2-3), three steps into one
dataset directory, then training with `reward_model.name=motif`:

    rogueray collect DATASET --env ID [--policy random|RUN_DIR|CHECKPOINT] --steps N
    rogueray annotate DATASET [--config FILE] [annotator.key=value ...] --pairs N
    rogueray fit-reward DATASET

Each shows a progress bar on a terminal (a progress line after 5 s, then every 30 s, in a log
or a pipe, cluster/progress.py), and stops cleanly on Ctrl-C or SIGTERM after the chunk (or Adam
step) in progress: collect and annotate continue where they stopped when run again; fit-reward
keeps the model of its last finished epoch. annotate's key=value settings may stand anywhere on the
line; an output folder that cannot be written is refused when the line is read."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from contextlib import contextmanager

from cluster.cli_args import non_negative_int, output_folder, positive_int
from cluster.console import counted
from cluster.fit_reward_cli import fit
from cluster.progress import NO_PROGRESS_HELP

COMMANDS = ("collect", "annotate", "fit-reward")


def add_parsers(sub) -> None:
    collect = sub.add_parser("collect", help="offline Motif 1/3: captions a policy sees, to disk")
    collect.add_argument("dataset", type=output_folder,
                         help="dataset folder (created; an existing one is resumed)")  # fmt: skip
    collect.add_argument("--env", default="NetHackScoreExtendedActions-v1", help="env id")
    collect.add_argument("--policy", default="random",
                         help="random (default), or a run directory / checkpoint file")  # fmt: skip
    collect.add_argument("--steps", type=positive_int, default=100_000,
                         help="env steps wanted in all")  # fmt: skip
    collect.add_argument("--seed", type=int, default=0)
    collect.add_argument("--num-envs", type=positive_int, default=8)
    collect.add_argument("--unroll-length", type=positive_int, default=128,
                         help="steps per env per chunk")  # fmt: skip
    collect.add_argument("--max-episode-steps", type=positive_int, default=None)
    collect.add_argument("--normalize-captions", action="store_true",
                         help="fold digits and whitespace, as env.normalize_captions")  # fmt: skip
    collect.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    annotate = sub.add_parser("annotate", help="offline Motif 2/3: LLM preferences on pairs")
    annotate.add_argument("dataset")
    annotate.add_argument("overrides", nargs="*", default=[], metavar="key=value",
                          help="annotator settings as in training, e.g. annotator.backend=openai "
                          "(the 'annotator.' prefix may be left out), anywhere on the "
                          "line")  # fmt: skip
    annotate.add_argument("--config", help="a run config whose annotator.* section to use")
    annotate.add_argument("--pairs", type=positive_int, default=5000,
                          help="answered pairs wanted in all")  # fmt: skip
    annotate.add_argument("--chunk-size", type=positive_int, default=64,
                          help="pairs per committed chunk")  # fmt: skip
    annotate.add_argument("--seed", type=int, default=0)
    annotate.add_argument("--both-orders", action="store_true",
                          help="ask each pair in both orders and average (cancels a judge's "
                          "position bias; twice the questions)")  # fmt: skip
    annotate.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    fit = sub.add_parser("fit-reward", help="offline Motif 3/3: fit the reward model")
    fit.add_argument("dataset")
    fit.add_argument("--out", type=output_folder,
                     help="output directory (default DATASET/reward)")  # fmt: skip
    fit.add_argument("--model-id", help="label group to fit on (when the store has several)")
    fit.add_argument("--prompt-version", help="with --model-id")
    fit.add_argument("--val-fraction", type=float, default=0.2, help="held out (Motif: 0.2)")
    fit.add_argument("--epochs", type=positive_int, default=10, help="Motif's README: 10")
    fit.add_argument("--min-steps", type=non_negative_int, default=500,
                     help="Adam steps in all at the least, however few the pairs (500)")  # fmt: skip
    fit.add_argument("--batch-size", type=positive_int, default=1024,
                     help="pairs per step (Motif: 1024)")  # fmt: skip
    fit.add_argument("--lr", type=float, default=1e-4, help="Adam step (Motif's code: 1e-4)")
    fit.add_argument("--width", choices=("oni", "small"), default="oni",
                     help="text network size, as reward_model.width (small: 50k parameters "
                     "against 307k, 2-2.5x faster per step on a CPU)")  # fmt: skip
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


class _Stop:
    """SIGINT/SIGTERM -> stop after the current chunk (or step); a second signal stops at once."""

    def __init__(self) -> None:
        self.stop = False
        self.signal = ""
        self.after = "this chunk"
        self.exit_code = 0

    def __call__(self) -> bool:
        return self.stop

    def handle(self, signum, frame) -> None:
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        self.signal = signal.Signals(signum).name
        self.exit_code = 128 + signum
        print(f"\n[rogueray] {self.signal}: stopping after {self.after}", file=sys.stderr,
              flush=True)  # fmt: skip


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
    """Dispatch; errors the user can fix are raised (the CLI prints them, exit 2). A signal from
    the first line on stops the command between two pieces of work, never in start-up."""
    command = {"collect": _collect, "annotate": _annotate, "fit-reward": fit}[args.command]
    with _stoppable() as stop:
        return command(args, stop)


def _collect(args, stop) -> int:
    from cluster.collect import collect

    with _progress(args, args.steps, "step", "collect") as bar:
        data = collect(args.dataset, env_id=args.env, policy=args.policy, steps=args.steps,
                       seed=args.seed, num_envs=args.num_envs, unroll_length=args.unroll_length,
                       max_episode_steps=args.max_episode_steps,
                       normalize_captions=args.normalize_captions, progress=bar.update,
                       done_before=bar.done_before, should_stop=stop)  # fmt: skip
    state = "stopped; run the same command to continue" if stop() else "done"
    print(f"[rogueray] collect {state}: {counted(data.steps, 'step')}, "
          f"{counted(len(data.captions), 'distinct caption')}, "
          f"{counted(data.manifest['episodes'], 'episode')} finished in {data.path}")  # fmt: skip
    return stop.exit_code if stop() and data.steps < args.steps else 0


def annotate_config(args):
    """The run config whose annotator.* section `annotate` uses: --config (else the defaults),
    then the overrides (ConfigError on bad keys or values)."""
    from cluster.config import load_config
    from cluster.judge_cli import _overrides

    return load_config(args.config, _overrides(args.overrides))


def _annotate(args, stop) -> int:
    from annotator.label_store import LabelStore
    from cluster.annotation import check_backend_installed, model_id
    from cluster.collect import DatasetError, load_dataset
    from cluster.motif_annotate import LABEL_STORE, UNKNOWN, plan_annotation

    data = load_dataset(args.dataset)
    for path in (data.path, data.path / LABEL_STORE, data.path / UNKNOWN):
        if path.exists() and not os.access(path, os.W_OK):
            raise DatasetError(f"{path} is not writable: annotate stores its answers in "
                               f"{data.path / LABEL_STORE} and {data.path / UNKNOWN}")  # fmt: skip
    config = annotate_config(args)
    check_backend_installed(config)
    ann = config.annotator
    group = {"model_id": model_id(config), "prompt_version": _prompt_version(args, ann)}
    with LabelStore(data.path / LABEL_STORE, **group) as store:
        plan = plan_annotation(data.path, data.captions, store, pairs=args.pairs, seed=args.seed)
        if not plan.todo:  # said before the LLM loads (a local model takes a minute)
            print(_nothing_to_ask(plan, data.captions))
            return 0
        print(_asking(plan, data.captions, ann), flush=True)  # before the LLM loads, too
        with _progress(args, args.pairs, "pair", "annotate") as bar:
            bar.done_before(min(plan.done_before, args.pairs))
            report = asyncio.run(_annotate_async(args, plan, store, config, bar.update, stop))
    state = "stopped; run the same command to continue" if report.stopped else "done"
    print(f"[rogueray] annotate {state}: {report.done:,d} of {counted(args.pairs, 'pair')} answered "
          f"({report.labelled:,d} labelled now, {counted(report.ties, 'tie')}, {report.unknown:,d} "
          f"unknown, {counted(report.failed, 'failed request')}) by {_judge(ann)}, "
          f"goal {ann.goal}, into {data.path}")  # fmt: skip
    return (stop.exit_code or 130) if report.stopped else 0


def _judge(ann) -> str:
    return "the rules judge" if ann.backend == "rules" else f"{ann.backend} ({ann.model})"


def _asking(plan, captions: list[str], ann) -> str:
    """The line that opens an annotation: what is done already, what will be asked, by whom."""
    from cluster.motif_annotate import candidate_captions

    n = len(candidate_captions(captions))
    judge = _judge(ann)
    short = "" if plan.done_before + len(plan.todo) >= plan.target else (
        f" (every pair the dataset's {counted(n, 'caption')} allow: `rogueray collect` more steps "
        "for more)"
    )  # fmt: skip
    if plan.done_before:
        return (f"[rogueray] annotate: {plan.done_before:,d} of {counted(plan.target, 'pair')} "
                f"answered already in {plan.path}; asking {judge} the other "
                f"{len(plan.todo):,d}{short}")  # fmt: skip
    return (f"[rogueray] annotate: asking {judge} about {counted(len(plan.todo), 'pair')} of the "
            f"dataset's {counted(n, 'distinct caption')}{short}")  # fmt: skip


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
        wanted = f"all {plan.target:,d} pairs wanted are" if plan.target > 1 else "the pair is"
        return (
            f"[rogueray] annotate: {wanted} labelled already "
            f"({plan.done_before:,d} answered {by}); {tail}; a larger --pairs asks more"
        )
    n = len(candidate_captions(captions))
    return (
        f"[rogueray] annotate: all {counted(plan.done_before, 'pair')} of the dataset's "
        f"{counted(n, 'caption')} are labelled already ({by}); {tail}; `rogueray collect` more steps "
        "for more captions"
    )


async def _annotate_async(args, plan, store, config, progress, stop):
    from annotator.backends import make_backend
    from cluster.annotation import backend_options, server_wait_notice
    from cluster.motif_annotate import annotate_dataset

    ann = config.annotator
    backend = await asyncio.to_thread(make_backend, ann.backend, **backend_options(config))
    try:
        ready = getattr(backend, "wait_ready", None)
        if ready is not None:
            await ready(timeout=ann.request_timeout_s, on_wait=server_wait_notice(ann, "annotate"))
        return await annotate_dataset(
            plan, backend=backend, store=store, goal=ann.goal, style=ann.style,
            chunk_size=args.chunk_size, batch_size=ann.batch_size,
            max_retries=ann.max_retries, both_orders=args.both_orders, progress=progress,
            should_stop=stop,
        )  # fmt: skip
    finally:
        await backend.close()
