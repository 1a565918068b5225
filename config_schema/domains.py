"""The domains of numeric config keys.

Every int or float field of a config dataclass declares its domain in its type, e.g.

    learning_rate: Positive = 1e-4          # a finite number > 0
    value_clip: Positive | None = 1.0       # ... or null
    num_workers: Count = 2                  # an integer >= 1

and `config_schema.keys.check_domains` checks them all. This module imports only the standard
library: it runs before anything heavy, and every package's config section uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated


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
Share = Annotated[float, Domain(low=0, high=1, low_open=True)]
"""A share of something (time, work) in (0, 1]."""
OpenFraction = Annotated[float, Domain(low=0, high=1, low_open=True, high_open=True)]
"""A number in (0, 1)."""
Count = Annotated[int, Domain(low=1, integer=True)]
"""An integer >= 1."""
NonNegativeInt = Annotated[int, Domain(low=0, integer=True)]
OddCount = Annotated[int, Domain(low=1, integer=True, odd=True)]
Niceness = Annotated[int, Domain(low=0, high=19, integer=True)]
"""A process's nice value, as `nice` takes it (higher: lower priority)."""
Seed = Annotated[int, Domain(low=0, high=2**32 - 1, integer=True)]
"""What numpy accepts as a seed."""
