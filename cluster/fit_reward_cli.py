"""`rogueray fit-reward DATASET`: offline Motif's third step on the command line (the fitting
itself is cluster/fit_reward.py). Says first what it fits, then shows Adam steps with the latest
train loss, one line per finished epoch, and a summary that names what each figure is computed
on (validation accuracy on decided pairs; the loss's floor from the ties)."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

from cluster.cli_args import output_folder
from cluster.console import counted
from cluster.progress import Progress

CHANCE_ACCURACY = 0.55
"""fit-reward warns at or below this validation accuracy (over the non-tie pairs)."""


def fit(args, stop) -> int:
    """`rogueray fit-reward`: `stop()` says a signal came (checked after every Adam step), and
    `stop.after`, `stop.signal`, `stop.exit_code` are what the lines say and return."""
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
              f"{counted(result.val_pairs, 'validation pair')} ties, so this reward was fitted on "
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
        bar = Progress(
            plan.steps, desc="fit-reward", unit="step", enabled=not self.args.no_progress
        )
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
        because = f" (--min-steps {plan.min_steps:,d} over {counted(plan.epochs, 'epoch')})"
    device = f"{plan.device} ({counted(torch.get_num_threads(), 'thread')})" if plan.device == "cpu" \
        else plan.device  # fmt: skip
    return (f"[rogueray] fit-reward: {plan.train_pairs:,d} train / {plan.val_pairs:,d} validation "
            f"pairs ({plan.train_ties:,d} / {plan.val_ties:,d} of them ties), "
            f"{counted(plan.epochs, 'epoch')} of {counted(plan.steps_per_epoch, 'step')}"
            f"{because} = {counted(plan.steps, 'Adam step')} of "
            f"{min(plan.batch_size, plan.train_pairs):,d} pairs, width "
            f"{plan.width} ({plan.parameters:,d} parameters), lr {plan.lr:g}, on {device}; "
            f"writes {plan.out}")  # fmt: skip


def _summary(result, elapsed: float) -> str:
    from cluster.console import format_duration

    plan, last = result.plan, result.history[-1]
    decided = plan.val_pairs - plan.val_ties
    accuracy = (f"validation accuracy {last['val_accuracy']:.3f} on the "
                f"{counted(decided, 'decided pair')} (ties have no right answer)" if decided
                else "no validation accuracy (no decided pair)")  # fmt: skip
    if plan.val_pairs:
        loss = (f"validation loss {last['val_loss']:.4f} on {counted(plan.val_pairs, 'pair')} incl. "
                f"{counted(plan.val_ties, 'tie')} (at best {result.val_loss_floor:.4f}: a tie's "
                "loss is ln 2 = 0.6931 at the least)")  # fmt: skip
    else:
        loss = "no validation pairs (--val-fraction 0)"
    quantiles = result.quantiles or {}
    return (f"[rogueray] fit-reward done in {format_duration(elapsed)}: "
            f"{counted(len(result.history), 'epoch')}, {counted(plan.steps, 'step')}; {accuracy}; "
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
            f"{counted(plan.epochs, 'epoch')})")  # fmt: skip
