"""A walk over the config schema: the leaf keys of a config dataclass with their types and
domains (`config_keys`), its sections, the check of every numeric value against its domain
(`check_domains`) and the fields' docstrings (`field_docs`, from which docs/config.md is made).

A numeric field without a domain is a programming error that `config_keys` raises on, so a new
key cannot be added without one (tests/cluster/test_config.py also checks it). Standard library
only, like `config_schema.domains`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

from config_schema.domains import Domain


@dataclass(frozen=True)
class ConfigKey:
    """One leaf of the config schema."""

    key: str  # dotted, e.g. "learner.learning_rate"
    owner: type  # the dataclass that holds it
    name: str
    type: Any  # int, float, str or bool
    optional: bool  # None allowed
    default: Any
    domain: Domain | None  # numeric keys only

    @property
    def numeric(self) -> bool:
        return self.type in (int, float)

    def allowed(self) -> str:
        """The domain in words, "or null" included when None is allowed."""
        assert self.domain is not None
        return self.domain.describe() + (", or null" if self.optional else "")

    def type_name(self) -> str:
        name = {int: "int", float: "float", bool: "bool", str: "str"}[self.type]
        return f"{name} | null" if self.optional else name


def _unwrap(hint: Any) -> tuple[Any, bool, Domain | None]:
    """(base type, None allowed, domain) of a field's type hint, Annotated metadata included."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported config type {hint!r}")
        hint = rest[0]
    domain = None
    if typing.get_origin(hint) is Annotated:
        hint, *extras = typing.get_args(hint)
        domain = next((e for e in extras if isinstance(e, Domain)), None)
    return hint, optional, domain


def config_keys(cls: type, prefix: str = "") -> list[ConfigKey]:
    """Every leaf key of the dataclass `cls`, sections expanded, in declaration order.
    Raises TypeError for a numeric key that declares no domain."""
    hints = typing.get_type_hints(cls, include_extras=True)
    keys: list[ConfigKey] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            keys += config_keys(hint, f"{prefix}{f.name}.")
            continue
        base, optional, domain = _unwrap(hint)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        key = ConfigKey(prefix + f.name, cls, f.name, base, optional, default, domain)
        if key.numeric and domain is None:
            raise TypeError(
                f"config key {key.key!r} ({cls.__name__}.{f.name}) is numeric but declares no "
                "domain; annotate it with one of config_schema.domains' types (Positive, Count, ...)"
            )
        keys.append(key)
    return keys


def sections(cls: type) -> dict[str, type]:
    """Dotted section name ("" for the top level) -> dataclass, in declaration order."""
    found = {"": cls}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            for name, sub in sections(hints[f.name]).items():
                found[f.name + ("." + name if name else "")] = sub
    return found


def check_domains(config: Any, cls: type | None = None) -> str | None:
    """The first numeric key of `config` outside its domain, as an error message; else None."""
    for key in config_keys(cls or type(config)):
        if not key.numeric:
            continue
        value = config
        for part in key.key.split("."):
            value = getattr(value, part)
        if value is None and key.optional:
            continue
        if not _is_number(value) or not key.domain.contains(value):
            return domain_error(key, value)
    return None


def domain_error(key: ConfigKey, value: Any) -> str:
    shown = "null" if value is None else repr(value)
    return f"config key {key.key!r} is {shown}; allowed: {key.allowed()}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def field_docs(cls: type) -> dict[str, str]:
    """The docstrings of a dataclass's fields: the string literal right after each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs
