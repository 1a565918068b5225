"""Offline Motif on the command line (Klissarov et al. 2023, sections 2-3), three steps into one
dataset directory, then training with `reward_model.name=motif`:

    rogueray collect DATASET --env ID [--policy random|RUN_DIR|CHECKPOINT] --steps N
    rogueray annotate DATASET [--config FILE] [annotator.key=value ...] --pairs N
    rogueray fit-reward DATASET

Each shows a progress bar on a terminal (a progress line every 30 s in a log or a pipe,
cluster/progress.py), and stops cleanly on Ctrl-C or SIGTERM after the chunk (or Adam step) in
progress: collect and annotate continue where they stopped when run again; fit-reward keeps
the model of its last finished epoch. annotate's key=value settings may stand anywhere on the
line; an output folder that cannot be written is refused when the line is read."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cluster.cli_args import positive_int
from cluster.progress import NO_PROGRESS_HELP

COMMANDS = ("collect", "annotate", "fit-reward")


def output_folder(text: str) -> Path:
    """A folder a command writes into (made when missing): not a file, and in a place that can
    be written, so that a long command never fails at its end."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, so {text} cannot be made")
    where = f"folder {text}" if existing == path else f"{existing}, where {text} would be made,"
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{where} is not writable")
    try:  # a file made and removed at once: what os.access misses (root, a read-only mount)
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{where} cannot be written ({exc.strerror})") from None
    return path


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


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
    fit.add_argument("--min-steps", type=_non_negative_int, default=500,
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


def _n(count: int, noun: str, plural: str | None = None) -> str:
    """'1 caption', '2 captions', '1,024 steps'."""
    return f"{count:,d} {noun if count == 1 else plural or noun + 's'}"


def run(args: argparse.Namespace) -> int:
    """Dispatch; errors the user can fix are raised (the CLI prints them, exit 2). A signal from
    the first line on stops the command between two pieces of work, never in start-up."""
    command = {"collect": _collect, "annotate": _annotate, "fit-reward": _fit}[args.command]
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
    print(f"[rogueray] collect {state}: {_n(data.steps, 'step')}, "
          f"{_n(len(data.captions), 'distinct caption')}, "
          f"{_n(data.manifest['episodes'], 'episode')} finished in {data.path}")  # fmt: skip
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
    print(f"[rogueray] annotate {state}: {report.done:,d} of {_n(args.pairs, 'pair')} answered "
          f"({report.labelled:,d} labelled now, {_n(report.ties, 'tie')}, {report.unknown:,d} "
          f"unknown, {_n(report.failed, 'failed request')}) by {_judge(ann)}, "
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
        f" (every pair the dataset's {_n(n, 'caption')} allow: `rogueray collect` more steps "
        "for more)"
    )  # fmt: skip
    if plan.done_before:
        return (f"[rogueray] annotate: {plan.done_before:,d} of {_n(plan.target, 'pair')} "
                f"answered already in {plan.path}; asking {judge} the other "
                f"{len(plan.todo):,d}{short}")  # fmt: skip
    return (f"[rogueray] annotate: asking {judge} about {_n(len(plan.todo), 'pair')} of the "
            f"dataset's {_n(n, 'distinct caption')}{short}")  # fmt: skip


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
        f"[rogueray] annotate: all {_n(plan.done_before, 'pair')} of the dataset's "
        f"{_n(n, 'caption')} are labelled already ({by}); {tail}; `rogueray collect` more steps "
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


CHANCE_ACCURACY = 0.55
"""fit-reward warns at or below this validation accuracy (over the non-tie pairs)."""


def _fit(args, stop) -> int:
    from cluster.fit_reward import fit_reward

    if (args.model_id is None) != (args.prompt_version is None):
        raise ValueError("give --model-id and --prompt-version together")
    group = None if args.model_id is None else (args.model_id, args.prompt_version)
    if args.out is None and Path(args.dataset).is_dir():  # DATASET/reward, checked as --out is
        try:
            output_folder(str(Path(args.dataset) / "reward"))
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"fit-reward's output: {exc}; give a writable --out") from None
    stop.after = "this step"
    with ExitStack() as stack:
        shown = _FitDisplay(args, stack)
        result = fit_reward(args.dataset, out=args.out, group=group,
                            val_fraction=args.val_fraction, epochs=args.epochs,
                            min_steps=args.min_steps, batch_size=args.batch_size, lr=args.lr,
                            width=args.width, seed=args.seed, on_start=shown.start,
                            on_step=shown.step, on_epoch=shown.epoch,
                            should_stop=stop)  # fmt: skip
    if result.stopped:
        print(_stopped(result, stop), flush=True)
        return stop.exit_code or 130
    print(_summary(result, shown.elapsed()))
    last = result.history[-1]
    if result.val_pairs == result.plan.val_ties:
        print(f"[rogueray] warning: no validation accuracy: the judge called all "
              f"{_n(result.val_pairs, 'validation pair')} ties, so this reward was fitted on "
              "no preference it can be checked against. A judge with no opinion needs another "
              "judge (`annotator.backend=openai`) or, when it prefers whichever caption comes "
              "first (the embedded SmolLM2 does), `rogueray annotate DATASET "
              "--both-orders`")  # fmt: skip
    elif not last["val_accuracy"] > CHANCE_ACCURACY:
        print(f"[rogueray] warning: validation accuracy {last['val_accuracy']:.3f} is chance "
              "level: this reward ranks captions no better than a coin. A judge that prefers "
              "whichever caption comes first (the embedded SmolLM2 does) needs `rogueray "
              "annotate DATASET --both-orders`; more pairs or --min-steps may help too")  # fmt: skip
    return 0


class _FitDisplay:
    """fit-reward's output: one line saying what it fits, a progress bar (or plain line) of
    Adam steps with the epoch and the latest train loss, one line per finished epoch."""

    def __init__(self, args, stack: ExitStack) -> None:
        import time

        self.args, self.stack, self.bar, self.plan = args, stack, None, None
        self._clock = time.monotonic
        self._started = self._clock()

    def elapsed(self) -> float:
        return self._clock() - self._started

    def start(self, plan) -> None:
        self.plan = plan
        self._say(_plan_line(plan))
        bar = _progress(self.args, plan.steps, "step", "fit-reward")
        self.bar = self.stack.enter_context(bar)
        self._started = self._clock()

    def step(self, epoch: int, loss: float) -> None:
        self.bar.update(1)
        self.bar.note(f"epoch {epoch}/{self.plan.epochs}, train loss {loss:.4f}")

    def epoch(self, row: dict) -> None:
        plan = self.plan
        self._say(f"[rogueray] fit-reward epoch {row['epoch']}/{plan.epochs} "
                  f"(step {row['epoch'] * plan.steps_per_epoch:,d}/{plan.steps:,d}): train loss "
                  f"{row['train_loss']:.4f} accuracy {_acc(row['train_accuracy'])}; validation "
                  f"loss {row['val_loss']:.4f} accuracy {_acc(row['val_accuracy'])}")  # fmt: skip

    def _say(self, text: str) -> None:
        """A line on stdout; on a terminal through tqdm, which redraws the bar below it."""
        if self.bar is not None and self.bar.enabled and self.bar.tty:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(text, flush=True)


def _acc(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"  # NaN: no decided pair


def _plan_line(plan) -> str:
    import torch

    because = ""
    if plan.steps_per_epoch > -(-plan.train_pairs // plan.batch_size):  # more than the pairs make
        because = f" (--min-steps {plan.min_steps:,d} over {_n(plan.epochs, 'epoch')})"
    device = f"{plan.device} ({_n(torch.get_num_threads(), 'thread')})" if plan.device == "cpu" \
        else plan.device  # fmt: skip
    return (f"[rogueray] fit-reward: {plan.train_pairs:,d} train / {plan.val_pairs:,d} validation "
            f"pairs ({plan.train_ties:,d} / {plan.val_ties:,d} of them ties), "
            f"{_n(plan.epochs, 'epoch')} of {_n(plan.steps_per_epoch, 'step')}"
            f"{because} = {_n(plan.steps, 'Adam step')} of {plan.batch_size:,d} pairs, width "
            f"{plan.width} ({plan.parameters:,d} parameters), lr {plan.lr:g}, on {device}; "
            f"writes {plan.out}")  # fmt: skip


def _summary(result, elapsed: float) -> str:
    from cluster.console import format_duration

    plan, last = result.plan, result.history[-1]
    decided = plan.val_pairs - plan.val_ties
    accuracy = (f"validation accuracy {last['val_accuracy']:.3f} on the "
                f"{_n(decided, 'decided pair')} (ties have no right answer)" if decided
                else "no validation accuracy (no decided pair)")  # fmt: skip
    if plan.val_pairs:
        loss = (f"validation loss {last['val_loss']:.4f} on {_n(plan.val_pairs, 'pair')} incl. "
                f"{_n(plan.val_ties, 'tie')} (at best {result.val_loss_floor:.4f}: a tie's "
                "loss is ln 2 = 0.6931 at the least)")  # fmt: skip
    else:
        loss = "no validation pairs (--val-fraction 0)"
    quantiles = result.quantiles or {}
    return (f"[rogueray] fit-reward done in {format_duration(elapsed)}: "
            f"{_n(len(result.history), 'epoch')}, {_n(plan.steps, 'step')}; {accuracy}; "
            f"{loss}; last epoch's train loss {last['train_loss']:.4f}; normalisation mean "
            f"{result.mean:.4f} std {result.std:.4f}, median threshold "
            f"{quantiles.get(0.5, float('nan')):.4f}; saved {result.path} (use "
            f"reward_model.name=motif reward_model.path={result.path})")  # fmt: skip


def _stopped(result, stop) -> str:
    plan = result.plan
    done = len(result.history)
    epoch = min(done + 1, plan.epochs)
    where = f"at epoch {epoch}/{plan.epochs} (step {result.steps_done:,d}/{plan.steps:,d})"
    again = "run the same command to fit again from the start"
    if not done:
        return (f"[rogueray] fit-reward stopped by {stop.signal} {where}; nothing saved (a model "
                f"is written once an epoch has ended); {again}")  # fmt: skip
    row = result.history[-1]
    return (f"[rogueray] fit-reward stopped by {stop.signal} {where}; saved the model as of epoch "
            f"{done}/{plan.epochs} (validation loss {row['val_loss']:.4f}, accuracy "
            f"{_acc(row['val_accuracy'])}) to {result.path}; {again} (all "
            f"{_n(plan.epochs, 'epoch')})")  # fmt: skip
