"""Fixtures more than one test package uses."""

import pytest


@pytest.fixture
def nethack_seeds(monkeypatch):
    """Every (core, disp) seed pair NetHack was reset with in this test, in order (read back
    from NLE after each reset of an ONI task)."""
    from actors import nle_tasks

    seen: list[tuple[int, int]] = []
    real_reset = nle_tasks.OniTask.reset

    def reset(self, **kwargs):
        out = real_reset(self, **kwargs)
        seen.append(tuple(int(s) for s in self.get_seeds()[:2]))
        return out

    monkeypatch.setattr(nle_tasks.OniTask, "reset", reset)
    return seen
