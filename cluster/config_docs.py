"""docs/config.md, generated from the config dataclasses: every key with its type, default,
allowed values and docstring. Regenerate after changing a key:

    python -m cluster.config_docs > docs/config.md

tests/cluster/test_config.py fails when the file and the dataclasses disagree."""

from __future__ import annotations

import json
import sys
from typing import Any

from cluster.config import RunConfig
from cluster.validation import CHOICES
from config_schema.keys import ConfigKey, config_keys, field_docs, sections

COMMAND = "python -m cluster.config_docs > docs/config.md"


def _default(value: Any) -> str:
    if isinstance(value, bool | str) or value is None:
        return json.dumps(value)
    return repr(value)


def _allowed(key: ConfigKey) -> str:
    if key.domain is not None:
        return key.allowed()
    if key.key in CHOICES:
        return "one of " + ", ".join(f"`{c}`" for c in CHOICES[key.key]())
    return ""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    keys = config_keys(RunConfig)
    lines = [
        "# Config keys",
        "",
        "Generated from the dataclasses in `cluster/config.py`, `annotator/config.py` and",
        f"`reward_models/config.py` by `{COMMAND}`;",
        "do not edit by hand (a test fails when this file and the code disagree).",
        "",
        "Set a key in a YAML config (sections are mappings) or on the command line with a dotted",
        "override: `rogueray train [CONFIG] learner.learning_rate=3e-4 total_env_steps=2e5`",
        "(`--learner.learning_rate 3e-4` works too). Numbers are checked against the domain shown",
        "under *allowed* before anything starts; `null` is YAML for None.",
        "",
    ]
    for name, cls in sections(RunConfig).items():
        docs = field_docs(cls)
        title = f"`{name}.*`" if name else "Top level"
        lines += [f"## {title}", ""]
        if name:
            parent_cls = sections(RunConfig)[name.rpartition(".")[0]]
            lines += [_cell(field_docs(parent_cls)[name.rpartition(".")[2]]), ""]
        lines += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
        for key in keys:
            if key.owner is not cls:
                continue
            lines.append(
                f"| `{key.key}` | {_cell(key.type_name())} | `{_default(key.default)}` | "
                f"{_cell(_allowed(key))} | {_cell(docs.get(key.name, ''))} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
