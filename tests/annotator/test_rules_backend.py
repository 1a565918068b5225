"""The rules judge (annotator.backend=rules): labels from a YAML of regexes, read back from the
project's own prompts; bad YAML refused naming the file and the pattern."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from annotator.backends import backend_options, make_backend
from annotator.backends.rules import DEFAULT_RULES, RulesBackend, RulesError, load_rules
from annotator.parsing import parse_answer
from annotator.prompts import classification_prompt, ranking_prompt

RULES = textwrap.dedent(
    r"""
    default_label: 0
    goals:
      gold:
        - {pattern: 'picks up .*gold', label: 0}
        - {pattern: 'gold piece', label: 1}
      stairs:
        - {pattern: 'staircase down', label: 1}
        - {pattern: '<', label: 0.7}
    """
)


def _write(tmp_path, text, name="rules.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _chat(prompt):
    return [{"role": r, "content": c} for r, c in prompt.messages]


def _probs(backend, prompt):
    return asyncio.run(backend.choice_probs([_chat(prompt)], prompt.choices))[0]


def test_labels_follow_the_yaml_first_match_wins(tmp_path):
    rules = load_rules(_write(tmp_path, RULES))
    assert rules.label("$ - 3 gold pieces.", "gold") == 1.0
    assert rules.label("The kitten picks up a gold piece.", "gold") == 0.0  # first rule wins
    assert rules.label("It's a wall.", "gold") == 0.0  # no match: default_label
    assert rules.label("$ - 3 gold pieces.", "combat") == 0.0  # goal not in the YAML
    assert rules.matching_rule("$ - a gold piece.", "gold") == "gold piece"


def test_choice_probs_reads_goal_and_caption_from_the_prompt(tmp_path):
    backend = RulesBackend(_write(tmp_path, RULES))
    yes = classification_prompt("$ - 3 gold pieces.", goal="gold")
    assert _probs(backend, yes) == {"yes": 1.0, "no": 0.0}
    other_goal = classification_prompt("$ - 3 gold pieces.", goal="stairs")
    assert _probs(backend, other_goal) == {"yes": 0.0, "no": 1.0}
    # the prompt escapes < and > (&lt; &gt;); the rules see the game's text
    soft = classification_prompt("There is a staircase up here <", goal="stairs")
    assert "&lt;" in soft.messages[-1][1]
    assert _probs(backend, soft) == pytest.approx({"yes": 0.7, "no": 0.3})
    assert backend.stats.requests == 3 and backend.stats.invalid == 0


def test_ranking_and_reasoned_answers(tmp_path):
    backend = RulesBackend(_write(tmp_path, RULES))
    first = ranking_prompt("There is a staircase down here.", "It's a wall.", goal="stairs")
    assert _probs(backend, first) == {"first": 1.0, "second": 0.0, "tie": 0.0}
    second = ranking_prompt("", "$ - a gold piece.", goal="gold")  # empty caption shown as such
    assert _probs(backend, second) == {"first": 0.0, "second": 1.0, "tie": 0.0}
    tie = ranking_prompt("It's a wall.", "Never mind.", goal="gold")
    assert _probs(backend, tie)["tie"] == 1.0
    # reasoned: the answer is in the tag the prompt asks for, and the annotator's parser reads it
    prompts = [
        classification_prompt("$ - 3 gold pieces.", goal="gold", style="reasoned"),
        ranking_prompt("It's a wall.", "$ - 3 gold pieces.", goal="gold", style="reasoned"),
        classification_prompt("$ - 3 gold pieces.", goal="gold", style="direct"),
    ]
    texts = asyncio.run(backend.generate([_chat(p) for p in prompts], max_tokens=512))
    assert texts == ["<answer>yes</answer>", "<answer>2</answer>", "yes"]
    assert [parse_answer(t, p) for t, p in zip(texts, prompts, strict=True)] == [1.0, 0.0, 1.0]


def test_a_prompt_it_cannot_read_is_an_invalid_answer(tmp_path):
    backend = RulesBackend(_write(tmp_path, RULES))
    got = asyncio.run(
        backend.choice_probs([[{"role": "user", "content": "Is fire hot?"}]], ["yes", "no"])
    )
    assert got == [{}]
    assert backend.stats.invalid == 1
    assert [k for k, _ in backend.drain_notices()] == ["rules_prompt"]


def test_make_backend_and_the_shipped_rules():
    assert backend_options("rules") == ("model",)
    backend = make_backend("rules", model="smollm2-135m")  # the config's default: shipped rules
    assert backend.rules.path == DEFAULT_RULES
    assert backend.model_id.startswith("rules:default@")
    assert backend.rules.label("You kill the newt!", "combat") == 1.0
    assert backend.rules.label("The kitten bites the newt.  The newt is killed!", "combat") == 0.0
    assert backend.rules.label("There is a staircase down here.", "stairs") == 1.0
    assert backend.rules.label("There is a staircase up here.", "stairs") == 0.0
    assert backend.rules.label("Are you sure you want to pray? [yn] (n) ", "default") == 0.0
    asyncio.run(backend.close())
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(backend.choice_probs([[("user", "x")]], ["yes", "no"]))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (
            "goals:\n  gold:\n    - {pattern: '(unclosed', label: 1}\n",
            r"bad\.yaml'.*goal 'gold', rule 1: pattern '\(unclosed' is not a valid regex",
        ),
        (
            "goals:\n  gold:\n    - {pattern: 'gold', label: 2}\n",
            r"bad\.yaml'.*goal 'gold', rule 1 \('gold'\): label must be a number in \[0, 1\]",
        ),
        (
            "goals:\n  treasure:\n    - {pattern: 'gold', label: 1}\n",
            r"bad\.yaml'.*goal 'treasure': unknown goal; allowed: default",
        ),
        (
            "goals:\n  gold:\n    - {regex: 'gold', label: 1}\n",
            r"bad\.yaml'.*goal 'gold', rule 1: expected \{pattern: REGEX",
        ),
        ("goals: [1, 2]\n", r"bad\.yaml'.*expected a mapping with a 'goals' mapping"),
        ("goals: {gold: [\n", r"bad\.yaml'.*not valid YAML"),
    ],
)
def test_bad_yaml_is_refused_naming_file_and_pattern(tmp_path, body, match):
    path = _write(tmp_path, body, "bad.yaml")
    with pytest.raises(RulesError, match=match):
        make_backend("rules", model=str(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(RulesError, match=r"nope\.yaml'.*cannot read"):
        load_rules(tmp_path / "nope.yaml")


# ---- behind the real annotator, and in a run config ------------------------------------------


def test_the_annotator_labels_captions_with_the_rules(tmp_path):
    from annotator.annotator import Annotator
    from annotator.config import AnnotatorConfig
    from annotator.label_store import LabelStore
    from annotator.metrics import LABELS_TOTAL
    from tests.annotator.running import run_until

    backend = make_backend("rules")
    version = classification_prompt("x", goal="gold").version
    store = LabelStore(tmp_path / "l.sqlite", model_id=backend.model_id, prompt_version=version)
    settings = AnnotatorConfig(backend="rules", goal="gold", calibration="none")
    annotator = Annotator(lambda: backend, store, settings)
    annotator.submit({"$ - 4 gold pieces.": 2, "The kitten drops a gold piece.": 1, "": 5})

    asyncio.run(run_until(annotator, lambda: annotator.stats()[LABELS_TOTAL] == 3))
    labels = {label.caption: label.value for label in annotator.poll_labels()}
    assert labels == {"$ - 4 gold pieces.": 1.0, "The kitten drops a gold piece.": 0.0, "": 0.0}
    assert store.caption_labels() == labels


def test_run_config_checks_the_rules_and_keys_labels_by_them(tmp_path):
    from cluster.annotation import model_id
    from cluster.config import ConfigError, load_config

    hashing = ["reward_model.name=hashing", "reward.intrinsic_coef=0.4", "annotator.backend=rules"]
    config = load_config(None, hashing)
    assert model_id(config).startswith("rules:default@")  # never the SmolLM2 default's id
    good = _write(tmp_path, RULES)
    config = load_config(None, [*hashing, f"annotator.model={good}"])
    assert model_id(config) == f"rules:{good.resolve()}@{load_rules(good).digest}"
    bad = _write(tmp_path, "goals:\n  gold:\n    - {pattern: '[', label: 1}\n", "bad.yaml")
    with pytest.raises(ConfigError, match=r"annotator.model.*bad\.yaml'.*pattern '\['"):
        load_config(None, [*hashing, f"annotator.model={bad}"])
