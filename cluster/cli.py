"""The `rogueray` command line: train, resume, scale, labels, evaluate, replay, compare, doctor,
judge, and offline Motif's collect, annotate, fit-reward. Every input is checked before Ray
starts."""

from __future__ import annotations

import argparse
import difflib
import errno
import signal
import sys
from dataclasses import replace
from pathlib import Path

from cluster import (
    compare_cli,
    doctor,
    evaluate_cli,
    judge_cli,
    labels_cli,
    motif_cli,
    replay_cli,
)
from cluster.cli_flags import flags_as_overrides
from cluster.config import ConfigError, RunConfig, dump_yaml, load_config, shipped_config
from cluster.console import counted, done_line
from cluster.kernel_caches import bound_in_this_process
from cluster.ray_job import job_run_dir
from cluster.scaling import ScaleError, request_workers, running_driver, withdraw_request
from cluster.validation import saved_config

PRINT_CONFIG_HELP = "print the resolved config as YAML and exit, starting nothing"
FRESH_HELP = (
    "start from step 0 even if run_dir holds checkpoints (they are kept, renamed "
    "*.before-fresh, or *.corrupt when unreadable)"
)


class _Parser(argparse.ArgumentParser):
    """argparse, suggesting the command meant for a mistyped one (`rogueray trian`)."""

    def error(self, message: str):
        _, invalid, rest = message.partition("invalid choice: ")
        if invalid:  # "invalid choice: 'trian' (choose from 'train', 'resume', ...)"
            word, *choices = rest.split("'")[1::2]
            if close := difflib.get_close_matches(word, choices, n=1):
                message += f"; did you mean {close[0]!r}?"
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rogueray", description=__doc__)
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train (resumes when run_dir already holds a checkpoint)")
    train.add_argument(
        "config", nargs="?", help="YAML run config (default: the embedded NetHack run)"
    )
    train.add_argument(
        "overrides",
        nargs="*",
        default=[],  # without a default argparse lists a "*" positional as required
        metavar="key=value",
        help="e.g. learner.learning_rate=3e-4 (or --learner.learning_rate 3e-4); every key: "
        "docs/config.md",
    )
    train.add_argument("--quiet", action="store_true", help="no console progress lines")
    train.add_argument("--print-config", action="store_true", help=PRINT_CONFIG_HELP)
    train.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    resume = sub.add_parser("resume", help="continue a run from its directory")
    resume.add_argument("run_dir")
    resume.add_argument(
        "overrides", nargs="*", default=[], metavar="key=value", help="e.g. total_env_steps=1e6"
    )
    resume.add_argument("--quiet", action="store_true", help="no console progress lines")
    resume.add_argument("--print-config", action="store_true", help=PRINT_CONFIG_HELP)
    resume.add_argument("--fresh", action="store_true", help=FRESH_HELP)
    scale = sub.add_parser(
        "scale", help="change a run's rollout workers (running now, or at its next start)"
    )
    scale.add_argument("run_dir")
    scale.add_argument("num_workers", type=int, nargs="?", help="rollout workers wanted (>= 1)")
    scale.add_argument(
        "--cancel", action="store_true", help="withdraw the run's standing scale request"
    )
    labels_cli.add_parser(sub)
    evaluate_cli.add_parser(sub)
    replay_cli.add_parser(sub)
    doctor.add_parser(sub)
    compare_cli.add_parser(sub)
    judge_cli.add_parser(sub)
    motif_cli.add_parsers(sub)
    return parser


def _scale(args) -> int:
    if args.cancel or args.num_workers is None:
        return _cancel_scale(args)
    try:
        request_workers(args.run_dir, args.num_workers)
    except ScaleError as exc:
        print(f"rogueray: error: {exc}", file=sys.stderr)
        return 2
    driver, workers = running_driver(args.run_dir), counted(args.num_workers, "rollout worker")
    if driver is None:
        print(
            f"[rogueray] no job is running in {args.run_dir}; it will start with {workers} when "
            "trained or resumed"
        )
    else:
        print(
            f"[rogueray] asked the job in {args.run_dir} ({driver}) for {workers}; it resizes "
            "within a fragment (system/workers_alive in TensorBoard)"
        )
    return 0


def _cancel_scale(args) -> int:
    if not args.cancel:
        print("rogueray: error: scale: give NUM_WORKERS, or --cancel", file=sys.stderr)
        return 2
    if args.num_workers is not None:
        print("rogueray: error: scale: --cancel takes no NUM_WORKERS", file=sys.stderr)
        return 2
    if not Path(args.run_dir).is_dir():
        print(f"rogueray: error: {args.run_dir} is not a directory", file=sys.stderr)
        return 2
    wanted = withdraw_request(args.run_dir)
    if wanted is None:
        print(f"[rogueray] {args.run_dir} has no standing scale request")
    else:
        print(
            f"[rogueray] withdrew the request for {counted(wanted, 'rollout worker')} in "
            f"{args.run_dir}; the next start uses rollout.num_workers from its config (a running "
            "job keeps its current workers)"
        )
    return 0


class _Version(argparse.Action):
    """--version, reading the installed version only when asked."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("rogueray")
        except PackageNotFoundError:
            text = "(not installed)"
        print(f"rogueray {text}")
        parser.exit()


def _run_tool(args) -> int:
    """evaluate, replay and compare: their errors are the user's to fix, printed in one line."""
    module = {"evaluate": evaluate_cli, "replay": replay_cli, "compare": compare_cli}[args.command]
    try:
        return module.run(args)
    except Exception as exc:
        from cluster.compare import CompareError
        from cluster.evaluate import EvaluationError

        if isinstance(exc, EvaluationError | CompareError | ConfigError | FileNotFoundError):
            print(f"rogueray: error: {exc}", file=sys.stderr)
            return 2
        raise


def _run_judge_or_motif(args) -> int:
    """judge, collect, annotate, fit-reward: what the user must fix (an LLM server that does not
    answer included) is one line and exit 2."""
    from annotator.backends.base import BackendUnavailable
    from cluster.collect import DatasetError

    run = judge_cli.run if args.command == "judge" else motif_cli.run
    try:
        return run(args)
    except (DatasetError, ConfigError, ValueError, FileNotFoundError, BackendUnavailable) as exc:
        print(f"rogueray: error: {exc}", file=sys.stderr)
        return 2


def _split_config_arg(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """`rogueray train key=value` (no file): the first positional is an override, not a file."""
    if config is not None and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, overrides


def _load_for_train(args) -> RunConfig:
    config_path, overrides = _split_config_arg(args.config, args.overrides)
    return load_config(config_path or shipped_config("default.yaml"), overrides)


def _load_for_resume(args) -> RunConfig:
    return load_config(saved_config(args.run_dir), [f"run_dir={args.run_dir}", *args.overrides])


def _job_run_dir(args) -> None:
    """As the entrypoint of a Ray job, resume's relative RUN_DIR is taken relative to the home
    directory: the job's working directory is a temporary copy of the code (cluster/ray_job.py)."""
    if args.command == "resume":
        args.run_dir, line = job_run_dir(args.run_dir)
        if line is not None and not (args.quiet or args.print_config):
            print(line, flush=True)


def _job_config(config: RunConfig, args) -> RunConfig:
    """`train`'s config with its run_dir as a Ray job's entrypoint must use it."""
    run_dir, line = job_run_dir(config.run_dir)
    if line is None:
        return config
    if not (args.quiet or args.print_config):
        print(line, flush=True)
    return replace(config, run_dir=run_dir)


_DISK_ERRORS = {
    errno.ENOSPC: "free space on that file system (`df -h`), then run the command again",
    errno.EDQUOT: "free space within your quota, then run the command again",
    errno.EROFS: "the file system is read-only; give a writable run_dir",
    errno.EIO: "the disk reported an I/O error; check it, or give a run_dir on another disk",
}


def _error(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr gone too: the exit code still tells
        pass


class _Terminated(BaseException):
    pass


def _terminated(signum, frame) -> None:
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    """The command line; SIGINT and SIGTERM before training's own handler is in place (imports,
    config checks) end it with one line and exit 130 / 143."""
    bound_in_this_process()  # before any PyTorch kernel runs here or in a process started here
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread
        previous = None
    try:
        return _main(argv)
    except KeyboardInterrupt:
        _error("rogueray: interrupted (SIGINT)")
        return 130
    except _Terminated:
        _error("rogueray: stopped by SIGTERM during start-up; nothing was trained")
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _settings_anywhere(parser, args: argparse.Namespace, extras: list[str]) -> argparse.Namespace:
    """key=value items anywhere on a command's line join its settings (argparse fills a "*"
    positional in one piece, so `annotate DATASET --pairs 10 annotator.backend=rules` would
    leave the last item over); a command without settings refuses one, naming it."""
    settings = [item for item in extras if not item.startswith("-") and "=" in item]
    others = [item for item in extras if item not in settings]
    if settings and not isinstance(getattr(args, "overrides", None), list):
        parser.error(
            f"{settings[0]!r}: rogueray {args.command} takes no key=value settings; its options "
            f"are the flags `rogueray {args.command} --help` lists"
        )
    if others:
        parser.error(f"unrecognized arguments: {' '.join(others)}")
    if settings:
        args.overrides = [*args.overrides, *settings]
    return args


def _main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        argv = flags_as_overrides(sys.argv[1:] if argv is None else list(argv), parser)
    except ConfigError as exc:
        print(f"rogueray: error: {exc}", file=sys.stderr)
        return 2
    args = _settings_anywhere(parser, *parser.parse_known_args(argv))
    if args.command == "scale":
        return _scale(args)
    if args.command == "doctor":
        return doctor.run(args)
    if args.command == "labels":
        try:
            return labels_cli.run(args)
        except (FileNotFoundError, ValueError, labels_cli.LabelStoreError) as exc:
            print(f"rogueray: error: {exc}", file=sys.stderr)
            return 2
    if args.command in ("evaluate", "replay", "compare"):
        return _run_tool(args)
    if args.command in (*motif_cli.COMMANDS, "judge"):
        return _run_judge_or_motif(args)
    return _train_or_resume(args)


def _train_or_resume(args: argparse.Namespace) -> int:
    """`rogueray train` / `resume`: the config loaded and checked, the run, its last line; the
    exit code (2 for what the user must fix)."""
    _job_run_dir(args)
    try:
        config = _load_for_train(args) if args.command == "train" else _load_for_resume(args)
        config = _job_config(config, args)
    except ConfigError as exc:
        print(f"rogueray: error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_yaml(config), end="")
        return 0
    from cluster.checkpoint import CheckpointError
    from cluster.driver import StartupInterrupted, train
    from cluster.inference import InferenceUnavailable
    from cluster.placement import RayStartError

    try:
        result = train(config, quiet=args.quiet, fresh=args.fresh)
    except (ConfigError, CheckpointError) as exc:
        _error(f"rogueray: error: {exc}")
        return 2
    except StartupInterrupted as exc:
        _error(f"rogueray: {exc}")
        return exc.exit_code
    except (RayStartError, InferenceUnavailable) as exc:  # one line, no traceback
        _error(f"rogueray: error: {exc}")
        return 1
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise
        where = exc.filename or config.run_dir
        _error(f"rogueray: error: {where}: {exc.strerror}; {_DISK_ERRORS[exc.errno]}")
        return 2
    if result.already_done:  # said by train(), with the command that continues the run
        return 0
    try:
        print(done_line(result), flush=True)
        if result.total_env_steps and result.env_steps < result.total_env_steps:  # a signal
            print(f"[rogueray] stopped at {result.env_steps / result.total_env_steps:.0%} of "
                  f"{result.total_env_steps:,d}; to go on: rogueray resume {result.run_dir}")  # fmt: skip
    except (OSError, ValueError):  # the console is gone; the checkpoint is written
        _quiet_stdout()
    return 0


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush does not fail as well."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
