"""The judge benchmark: its metrics against hand computations, its data files, and a whole run
through the backend interface (the rules judge: no model)."""

from __future__ import annotations

import asyncio
import csv
import json

import pytest

from annotator.backends import make_backend
from annotator.judge_bench import (
    auc,
    calibrated_positive,
    decided_preference,
    pair_agreement,
    precision_recall,
    run_benchmark,
    summarise,
)
from annotator.judge_set import MIN_CAPTIONS, SET_DIR, JudgeSet, JudgeSetError, Pair, load_judge_set
from annotator.prompts import GOALS

# ---- metrics, computed by hand ----------------------------------------------------------------


def test_auc_matches_hand_computation():
    # positives score 0.9 and 0.4; negatives 0.8, 0.4, 0.1. The 6 (positive, negative) pairs:
    # (0.9, 0.8) 1, (0.9, 0.4) 1, (0.9, 0.1) 1, (0.4, 0.8) 0, (0.4, 0.4) 1/2 (tie), (0.4, 0.1) 1
    # -> 4.5 / 6 = 0.75
    assert auc([0.9, 0.8, 0.4, 0.4, 0.1], [1, 0, 1, 0, 0]) == pytest.approx(0.75)


def test_auc_extremes_and_one_class():
    assert auc([0.1, 0.2, 0.9], [0, 0, 1]) == 1.0  # the positive above both negatives
    assert auc([0.9, 0.2, 0.1], [0, 0, 1]) == 0.0  # below both
    assert auc([0.5, 0.5, 0.5], [1, 0, 0]) == 0.5  # all tied: chance
    assert auc([0.3, 0.7], [1, 1]) is None  # no negatives: undefined, not 1.0


def test_pair_agreement_matches_hand_computation():
    # judged vs team: (1 vs 1) -> 1, (0.5 vs 1) -> 1/2, (0 vs 1) -> 0, (0.5 vs 0.5) -> 1,
    # (1 vs 0.5) -> 1/2; mean = 3 / 5 = 0.6
    judged = [1.0, 0.5, 0.0, 0.5, 1.0]
    truth = [1.0, 1.0, 1.0, 0.5, 0.5]
    assert pair_agreement(judged, truth) == pytest.approx(0.6)
    assert pair_agreement([], []) is None


def test_decided_preference_from_scores():
    assert decided_preference(0.7, 0.2) == 1.0
    assert decided_preference(0.2, 0.7) == 0.0
    assert decided_preference(0.4, 0.4) == 0.5


def test_precision_and_recall_by_hand():
    # judge calls items 0, 1, 2 helpful; the team items 0 and 3: 1 hit of 3 called -> 1/3,
    # 1 found of 2 -> 1/2
    assert precision_recall([1, 1, 1, 0, 0], [1, 0, 0, 1, 0]) == (1 / 3, 1 / 2)
    assert precision_recall([0, 0], [1, 0]) == (None, 0.0)  # calls nothing: precision undefined


def test_calibration_quantile_marks_the_top_of_the_set():
    values = [0.05, 0.06, 0.07, 0.08, 0.30]  # a biased judge: all below 0.5
    assert calibrated_positive(values, "none", 0.8, 2000) == [False] * 5
    # the 0.8 quantile of these five is 0.124 (linear interpolation): only 0.30 is above it
    assert calibrated_positive(values, "quantile", 0.8, 2000) == [False] * 4 + [True]


# ---- the data ---------------------------------------------------------------------------------


def test_the_shipped_set_parses_and_is_complete():
    data = load_judge_set(SET_DIR)
    assert len(set(data.captions)) == len(data.captions) >= MIN_CAPTIONS
    assert set(data.goals) == set(GOALS)  # a 0/1 label for every goal the prompts offer
    for goal in data.goals:
        assert len(data.labels[goal]) == len(data.captions)
        assert set(data.labels[goal]) == {0, 1}  # both classes, so AUC is defined
    assert len(data.pairs) >= 200
    assert {p.preference for p in data.pairs} == {0.0, 0.5, 1.0}
    assert {p.goal for p in data.pairs} == set(GOALS)
    # hand-written captions are marked as such, and are a small minority
    sources = {s.split(":")[0] for s in data.sources}
    assert sources == {"run", "nle", "hand-written"}
    assert data.sources.count("hand-written") < len(data.captions) / 10


def test_the_heldout_set_parses():
    data = load_judge_set(SET_DIR / "heldout", min_captions=100)
    assert not set(data.captions) & set(load_judge_set(SET_DIR).captions)  # really held out


def _write_set(tmp_path, rows, pairs=None):
    with (tmp_path / "captions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["caption", "source", "default", "stairs"])
        w.writerows(rows)
    if pairs is not None:
        with (tmp_path / "pairs.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["first", "second", "goal", "preference"])
            w.writerows(pairs)
    return tmp_path


def test_bad_data_is_refused_naming_file_and_line(tmp_path):
    d = _write_set(tmp_path, [["a", "x", 1, 0], ["a", "x", 0, 0]])
    with pytest.raises(JudgeSetError, match=r"captions.csv:3: duplicate caption 'a'"):
        load_judge_set(d, min_captions=1)
    d = _write_set(tmp_path, [["a", "x", 1, 2]])
    with pytest.raises(JudgeSetError, match=r"captions.csv:2: goal 'stairs' of 'a' must be 0 or 1"):
        load_judge_set(d, min_captions=1)
    d = _write_set(tmp_path, [["a", "x", 1, 0], ["b", "x", 0, 0]], [["a", "zzz", "default", 1]])
    with pytest.raises(JudgeSetError, match=r"pairs.csv:2: second caption 'zzz' is not in"):
        load_judge_set(d, min_captions=1)
    with pytest.raises(JudgeSetError, match=r"at least 300 needed"):
        load_judge_set(d)


# ---- a whole run through the backend interface ------------------------------------------------


TINY = JudgeSet(
    captions=["There is a staircase down here.", "It's a wall.", "You kill the newt!", ""],
    sources=["t"] * 4,
    labels={"stairs": [1, 0, 0, 0], "combat": [0, 0, 1, 1]},  # "" labelled 1: a deliberate miss
    pairs=[
        Pair("There is a staircase down here.", "It's a wall.", "stairs", 1.0),
        Pair("It's a wall.", "You kill the newt!", "combat", 1.0),  # the rules disagree
    ],
)


@pytest.mark.parametrize("pairs", ["scores", "ranking"])
def test_rules_judge_through_the_benchmark(pairs):
    async def go():
        backend = make_backend("rules")
        try:
            return await run_benchmark(backend, TINY, style="direct", pairs=pairs)
        finally:
            await backend.close()

    answers = asyncio.run(go())
    assert answers.scores == {"stairs": [1.0, 0.0, 0.0, 0.0], "combat": [0.0, 0.0, 1.0, 0.0]}
    report = summarise(TINY, answers, calibration="none", quantile=0.8, window=2000)
    assert report["per_goal"]["stairs"]["auc"] == 1.0
    # combat: positives score 1.0 ("You kill") and 0.0 (""); negatives 0.0, 0.0:
    # (1, 0) 1, (1, 0) 1, (0, 0) 1/2, (0, 0) 1/2 -> 3 / 4
    assert report["per_goal"]["combat"]["auc"] == 0.75
    assert report["per_goal"]["combat"]["accuracy"] == 0.75
    assert report["per_goal"]["combat"]["positive_rate"] == 0.25
    assert report["per_goal"]["combat"]["precision"] == 1.0  # "You kill" is right
    assert report["per_goal"]["combat"]["recall"] == 0.5  # "" is missed
    assert report["pair_agreement"] == 0.5  # one right, one wrong
    assert report["invalid_rate"] == 0.0
    json.dumps(report)  # the CLI writes it as JSON


def test_reasoned_style_parses_answer_tags():
    async def go():
        backend = make_backend("rules")
        try:
            return await run_benchmark(backend, TINY, style="reasoned", pairs="ranking")
        finally:
            await backend.close()

    answers = asyncio.run(go())
    assert answers.scores["stairs"] == [1.0, 0.0, 0.0, 0.0]
    assert answers.preferences == [1.0, 0.0]
    assert answers.asked == 10 and answers.invalid == 0


class _Garbage:
    """A judge whose answers never parse, then (third time) says yes."""

    def __init__(self):
        self.calls = 0

    async def choice_probs(self, chats, choices):
        self.calls += 1
        return [{} if self.calls < 3 else {"yes": 1.0, "no": 0.0} for _ in chats]


def test_invalid_answers_are_retried_and_counted():
    data = TINY.subset(["stairs"])
    answers = asyncio.run(run_benchmark(_Garbage(), data, style="direct", max_retries=2))
    assert answers.asked == 12 and answers.invalid == 8  # 4 captions x 3 tries, 2 bad each
    assert answers.scores["stairs"] == [1.0] * 4
    answers = asyncio.run(run_benchmark(_Garbage(), data, style="direct", max_retries=1))
    assert answers.scores["stairs"] == [None] * 4  # given up: scored 0 in the report
    report = summarise(data, answers, calibration="none", quantile=0.8, window=10)
    assert report["invalid_rate"] == 1.0
    assert report["per_goal"]["stairs"]["no_answer"] == 4


def test_cli_reports_table_and_json(tmp_path, capsys):
    from cluster.cli import main

    out, rows = tmp_path / "r.json", tmp_path / "a.csv"
    argv = ["judge", "annotator.backend=rules", "--limit", "40", "--json", str(out)]
    assert main([*argv, "--answers", str(rows)]) == 0
    text = capsys.readouterr().out
    assert "overall" in text and "labels/s" in text
    report = json.loads(out.read_text())
    assert report["captions"] == 40 and report["judge"]["backend"] == "rules"
    assert set(report["per_goal"]) == set(GOALS)
    assert "none" in report["other_calibrations"]  # the configured one is quantile
    with rows.open(newline="") as f:
        answers = list(csv.DictReader(f))
    assert len(answers) == 40 * len(GOALS)
    assert {a["judge"] for a in answers} <= {"0", "1"}  # the rules answer P(yes) 0 or 1


def test_cli_bad_override_exits_2(capsys):
    from cluster.cli import main

    assert main(["judge", "annotator.style=shouting"]) == 2
    assert "style" in capsys.readouterr().err
