"""The domains of numeric config keys, and a walk over the config schema.

Every int or float field of a config dataclass declares its domain in its type, e.g.

    learning_rate: Positive = 1e-4          # a finite number > 0
    value_clip: Positive | None = 1.0       # ... or null
    num_workers: Count = 2                  # an integer >= 1

and `check_domains` checks them all. A numeric field without a domain is a programming error
that `config_keys` raises on, so a new key cannot be added without one (tests/cluster/
test_config.py also checks it). This module imports only the standard library: it runs before
anything heavy, and annotator/config.py uses it too.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any


@dataclass(frozen=True)
class Domain:
    """The values a numeric key allows: an interval, optionally of (odd) integers."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    odd: bool = False

    def contains(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.integer and (value != int(value) or (self.odd and int(value) % 2 == 0)):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        """How an error message and docs/config.md say it: "a finite number > 0"."""
        if self.integer:
            noun = "an odd integer" if self.odd else "an integer"
        else:
            noun = "a finite number"
        has_low, has_high = math.isfinite(self.low), math.isfinite(self.high)
        if has_low and has_high:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            noun = noun.replace("a finite number", "a number")  # an interval is finite
            return f"{noun} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        if has_low:
            return f"{noun} {'>' if self.low_open else '>='} {_num(self.low)}"
        if has_high:
            return f"{noun} {'<' if self.high_open else '<='} {_num(self.high)}"
        return noun

    def outside(self) -> list[float]:
        """Finite values just outside the domain (empty when only nan/inf are): for tests."""
        values: list[float] = []
        if math.isfinite(self.low):
            values.append(self.low if self.low_open else self.low - 1)
        if math.isfinite(self.high):
            values.append(self.high if self.high_open else self.high + 1)
        if self.integer and math.isfinite(self.low):
            start = math.ceil(self.low) + (1 if self.low_open else 0)
            values.append(start + 0.5)  # not an integer
            if self.odd:
                values.append(start + 1 if start % 2 else start)  # even
        return values


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# The domains config keys use. A new one is a new Annotated alias; nothing else changes.
Finite = Annotated[float, Domain()]
Positive = Annotated[float, Domain(low=0, low_open=True)]
NonNegative = Annotated[float, Domain(low=0)]
Fraction = Annotated[float, Domain(low=0, high=1)]
"""A number in [0, 1]."""
Discount = Annotated[float, Domain(low=0, high=1, low_open=True)]
"""A number in (0, 1]."""
OpenFraction = Annotated[float, Domain(low=0, high=1, low_open=True, high_open=True)]
"""A number in (0, 1)."""
Count = Annotated[int, Domain(low=1, integer=True)]
"""An integer >= 1."""
NonNegativeInt = Annotated[int, Domain(low=0, integer=True)]
OddCount = Annotated[int, Domain(low=1, integer=True, odd=True)]
Seed = Annotated[int, Domain(low=0, high=2**32 - 1, integer=True)]
"""What numpy accepts as a seed."""


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
                "domain; annotate it with one of cluster.schema's domains (Positive, Count, ...)"
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
