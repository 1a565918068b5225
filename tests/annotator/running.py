"""Running the annotator's labelling loop in a test: until a condition holds, bounded; and the
settings, store and judge the scripted-backend tests share."""

import asyncio

from annotator.config import AnnotatorConfig
from annotator.label_store import LabelStore
from annotator.prompts import classification_prompt


async def run_until(annotator, predicate, timeout: float = 5.0) -> None:
    """Run `annotator.run` until `predicate()` is true or `timeout` seconds pass, then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(annotator.run(stop))
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await task


def scripted_settings(**overrides) -> AnnotatorConfig:
    return AnnotatorConfig(calibration="none", **overrides)  # the judge's values are the labels


def gold_judge(text: str) -> float:
    """P(helpful) of a scripted double: 0.9 for captions about gold, else 0.1."""
    return 0.9 if "gold" in text else 0.1


def scripted_store(tmp_path, version=None) -> LabelStore:
    version = version or classification_prompt("x").version
    return LabelStore(
        tmp_path / "labels.sqlite", model_id="scripted-double", prompt_version=version
    )
