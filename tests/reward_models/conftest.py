"""Fixtures for the reward-model tests: one torch thread, so the learning tests stay fast when the
two shared cores are busy (two spinning threads then slow convolutions down many times)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
