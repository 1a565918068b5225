"""The annotator on the in-process vLLM engine (CPU build here, GPU build elsewhere): real
captions in, labels stored and handed out. Skipped where vLLM is not installed."""

import asyncio

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed")

from annotator.metrics import LABELS_TOTAL  # noqa: E402
from cluster.annotation import build_annotator  # noqa: E402
from cluster.config import load_config  # noqa: E402

pytestmark = [pytest.mark.llm, pytest.mark.slow]


def test_annotator_labels_captions_with_vllm(tmp_path):
    config = load_config(None, [
        f"run_dir={tmp_path}", "reward_model.name=hashing", "reward.intrinsic_coef=0.4",
        "annotator.backend=vllm", "annotator.batch_size=8",
    ])  # fmt: skip
    annotator = build_annotator(config)
    captions = ["You kill the newt!", "It's a wall.", "You see here 5 gold pieces.", ""]
    annotator.submit({caption: 1 for caption in captions})

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(annotator.run(stop))
        for _ in range(600):
            if annotator.stats()[LABELS_TOTAL] >= len(captions):
                break
            await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(go())
    labels = {label.caption: label.value for label in annotator.poll_labels()}
    assert set(labels) == set(captions)
    assert annotator.store.caption_labels() == labels
    assert type(annotator.backend).__name__ == "VLLMBackend"
