"""Collect real NetHack messages for the judge set (the `nle:explorer` source).

A scripted explorer plays NLE's NetHackScore with the full keyboard for SECONDS: random moves and
commands (search, look, pick up, kick, eat, open, fight, quaff, apply, read, ...), and, whenever a
`>` is on screen, travel to it (`_ >`), look (`:`) and go down (`>`). That reaches dungeon levels
2-4 in a few minutes, so it shows messages short training runs rarely do ("There is a staircase
down here.", trap doors, level-ups, shops). Writes [[message, count], ...] as JSON.

    python benchmarks/judge_set/collect_messages.py 90 /tmp/messages.json 1
"""

from __future__ import annotations

import collections
import json
import random
import sys
import time

import gymnasium as gym
import nle  # noqa: F401 - registers the NetHack envs
from nle import nethack
from nle.nethack import actions as A

ACTIONS = list(nethack.ACTIONS)
INDEX = {a: i for i, a in enumerate(ACTIONS)}
MOVES = list(A.CompassDirection) + list(A.CompassDirectionLonger)
EXTRA = [
    A.Command.SEARCH,
    A.Command.LOOK,
    A.Command.PICKUP,
    A.Command.KICK,
    A.Command.EAT,
    A.Command.OPEN,
    A.Command.FIGHT,
    A.Command.QUAFF,
    A.MiscDirection.WAIT,
    A.MiscAction.MORE,
    A.Command.CLOSE,
    A.Command.APPLY,
    A.Command.READ,
]


def key(ch: str) -> int:
    """The action index of the key `ch`."""
    return next(i for i, a in enumerate(ACTIONS) if int(a) == ord(ch))


def collect(seconds: float, seed: int) -> collections.Counter:
    rng = random.Random(seed)
    env = gym.make("NetHackScore-v0", actions=ACTIONS, max_episode_steps=3000)
    counts: collections.Counter = collections.Counter()
    obs, _ = env.reset(seed=seed)
    plan: list[int] = []
    start = time.time()
    while time.time() - start < seconds:
        if plan:
            action = plan.pop(0)
        else:
            r = rng.random()
            if (obs["tty_chars"][1:22] == ord(">")).any() and r < 0.15:
                plan = [key("_"), key(">"), key("."), key("."), key(":"), key(">")]
                action = plan.pop(0)
            elif r < 0.25:
                action = INDEX[rng.choice(EXTRA)]
            else:
                action = INDEX[rng.choice(MOVES)]
        obs, _, terminated, truncated, _ = env.step(action)
        counts[bytes(obs["message"]).rstrip(b"\0").decode("latin-1")] += 1
        if terminated or truncated:
            obs, _ = env.reset()
            plan = []
    env.close()
    return counts


if __name__ == "__main__":
    seconds, out, seed = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    found = collect(seconds, seed)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(found.most_common(), f)
    print(f"{sum(found.values())} steps, {len(found)} distinct messages -> {out}")
