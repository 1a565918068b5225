"""One real SmolLM2-135M transformers backend per test process, shared by the test modules that
need it (loading costs a second; the first run also converts the model into the cache)."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def smollm2_transformers_backend() -> Any:
    from annotator.backends import make_backend

    return make_backend("transformers", model="smollm2-135m")
