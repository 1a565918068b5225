"""`rogueray train` and `resume` with config keys given as flags (`--total-env-steps 1000`)
beside the commands' own switches: what the argument parser is handed."""

from __future__ import annotations

import argparse
import difflib

from cluster.config import ConfigError, RunConfig
from config_schema.keys import config_keys


def flags_as_overrides(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`train`/`resume` with config keys given as flags, `--total_env_steps 1000` or
    `--learner.learning_rate=3e-4`: the same as the overrides `total_env_steps=1000`, ...
    (dashes in a flag's name read as underscores). The command's own switches (--quiet, ...)
    move in front, so that argparse sees the positionals in one piece wherever they were typed."""
    if not argv or argv[0] not in ("train", "resume"):
        return argv
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    actions = {s: a for a in subparsers.choices[argv[0]]._actions for s in a.option_strings}
    kept, overrides, switches = [], [], []
    rest = iter(argv[1:])
    for token in rest:
        if token == "--":
            kept += [token, *rest]
            break
        flag, eq, value = token.partition("=")
        if flag in actions:
            (switches if actions[flag].nargs == 0 else kept).append(token)
        elif not token.startswith("--"):
            kept.append(token)
        else:
            key = flag[2:].replace("-", "_")
            _check_flag(flag, key, argv[0], list(actions))
            if not eq:
                value = next(rest, None)
                if value is None or value.startswith("--"):
                    raise ConfigError(
                        f"flag {flag} needs a value: write {key}=VALUE or {flag} VALUE"
                    )
            overrides.append(f"{key}={value}")
    return [argv[0], *switches, *kept, *overrides]


def _check_flag(flag: str, key: str, command: str, switches: list[str]) -> None:
    """A flag that is no config key but looks like one of the command's own switches (a typo,
    `--print-confg`) is named as such, rather than read as a key wanting a value."""
    if key in {k.key for k in config_keys(RunConfig)}:
        return
    if close := difflib.get_close_matches(flag, switches, n=1, cutoff=0.85):
        raise ConfigError(f"unknown flag {flag} for `rogueray {command}`; did you mean {close[0]}?")
