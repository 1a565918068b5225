"""Test double: wraps a REAL annotator backend (e.g. the embedded SmolLM2) and records every
prompt it is sent, optionally raising SIGINT in this process once a number of prompts has been
sent (a user's Ctrl-C in the middle of `rogueray annotate`). The answers are the real backend's;
closing the double leaves the wrapped backend open (it is shared between tests)."""

from __future__ import annotations

import re
import signal

from reward_models.pair_sampling import pair_key

_MESSAGE = re.compile(r"<message>(.*?)</message>", re.DOTALL)


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


class CountingBackendDouble:
    def __init__(self, real, interrupt_after: int | None = None):
        self.real = real
        self.model_id = real.model_id
        self.cpu_threads = real.cpu_threads
        self.interrupt_after = interrupt_after
        self.prompts: list[str] = []  # the user message of every prompt sent, in order
        self.closed = False

    @property
    def cpu_seconds(self) -> float | None:
        return self.real.cpu_seconds

    def pairs(self) -> list[tuple[str, str]]:
        """The order-free caption pair of every ranking prompt sent, in order."""
        out = []
        for text in self.prompts:
            first, second = (_unescape(m) for m in _MESSAGE.findall(text))
            out.append(pair_key(first, second))
        return out

    def _record(self, chats) -> None:
        for chat in chats:
            self.prompts.append(chat[-1]["content"])
            if self.interrupt_after is not None and len(self.prompts) == self.interrupt_after:
                signal.raise_signal(signal.SIGINT)

    async def choice_probs(self, chats, choices):
        self._record(chats)
        return await self.real.choice_probs(chats, choices)

    async def generate(self, chats, **kwargs):
        self._record(chats)
        return await self.real.generate(chats, **kwargs)

    async def close(self) -> None:
        self.closed = True
