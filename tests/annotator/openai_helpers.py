"""What the openai backend's tests share: a chat, backends with short timeouts against the test
server (tests/doubles/openai_server.py), the yes/no choices."""

from __future__ import annotations

from annotator.backends import make_backend
from tests.doubles.openai_server import OpenAICompatServer

YES_NO = ["yes", "no"]


def user_chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def fast_backend(server: OpenAICompatServer, **options):
    """A backend with short timeouts and back-off, so fault tests take a second, not minutes."""
    defaults = dict(
        request_timeout=2.0, connect_timeout=0.5, max_retries=2,
        backoff_initial=0.05, backoff_max=0.2,
    )  # fmt: skip
    defaults.update(options)
    return make_backend("openai", base_url=server.base_url, **defaults)
