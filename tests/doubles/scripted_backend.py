"""Test double: an LLM backend whose answers are a function of the prompt text, which can be
switched down (every request fails) or into garbage mode (answers never parse). Named as a
double; product code never uses it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence


class ScriptedBackendDouble:
    """`model_id` may be reassigned mid-run, as a server that starts serving another model."""

    cpu_threads: int | None = None  # computes on none of this machine's CPUs, as a server
    cpu_seconds: float | None = None

    def __init__(self, judge: Callable[[str], float], delay_s: float = 0.0):
        self.model_id = "scripted-double"
        self.judge = judge  # user-message text -> P(first choice)
        self.delay_s = delay_s
        self.notices: list[tuple[str, str]] = []
        self.temperatures: list[float] = []  # of each generate call
        self.down = False
        self.garbage = False
        self.asked: list[str] = []
        self.closed = False

    async def choice_probs(self, chats, choices: Sequence[str]):
        await asyncio.sleep(self.delay_s)
        if self.down:
            return [None] * len(chats)
        out = []
        for chat in chats:
            text = chat[-1]["content"]
            self.asked.append(text)
            if self.garbage:
                out.append({})  # an answer with none of the choices in it
                continue
            p = self.judge(text)
            rest = (1.0 - p) / (len(choices) - 1)
            out.append({c: (p if i == 0 else rest) for i, c in enumerate(choices)})
        return out

    async def generate(self, chats, *, max_tokens: int, temperature: float = 0.0):
        self.temperatures.append(temperature)
        await asyncio.sleep(self.delay_s)
        if self.down:
            return [None] * len(chats)
        self.asked.extend(chat[-1]["content"] for chat in chats)
        if self.garbage:
            return ["I like turtles"] * len(chats)
        return [
            f"Thinking about yes.<answer>{'yes' if self.judge(c[-1]['content']) > 0.5 else 'no'}</answer>"
            for c in chats
        ]

    def drain_notices(self) -> list[tuple[str, str]]:
        out, self.notices = self.notices, []
        return out

    async def close(self) -> None:
        self.closed = True
