"""Fixtures of the annotator tests."""

from __future__ import annotations

import pytest

from tests.doubles.openai_server import OpenAICompatServer, ScriptedAnswers


@pytest.fixture
def scripted():
    """The test OpenAI-compatible server on 127.0.0.1 answering from scripted rules: prompts
    naming fire lean yes, ice no."""
    answers = ScriptedAnswers(
        rules={"fire": {"Yes": 0.6, "yes": 0.1, "No": 0.2}, "ice": {"No": 0.8, "Yes": 0.1}},
        model_name="scripted",
    )
    with OpenAICompatServer(answers) as server:
        yield server
