"""The config schema's names as `cluster/config.py` imports them; they live in `config_schema/`
(below every layer, so that each package's config section can declare its domains)."""

from config_schema.domains import (  # noqa: F401
    Count,
    Discount,
    Domain,
    Finite,
    Fraction,
    NonNegative,
    NonNegativeInt,
    OddCount,
    OpenFraction,
    Positive,
    Seed,
)
from config_schema.keys import ConfigKey, check_domains, config_keys, domain_error, sections  # noqa: F401
