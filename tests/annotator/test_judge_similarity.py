"""The ELLM-style similarity as a judge (annotator/judge_similarity.py, `rogueray judge
--embedding`): its AUC, accuracy at the threshold and pair agreement match a hand computation on a
tiny set, and the real command's report matches a recomputation from its own answers file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from annotator.judge_bench import summarise
from annotator.judge_set import JudgeSet, Pair
from annotator.judge_similarity import at_threshold, similarity_answers
from reward_models.ellm import GOAL_SENTENCES
from tests.doubles.fixed_embedder import FixedEmbedderDouble


def _unit(cos: float) -> list[float]:
    return [cos, float(np.sqrt(1.0 - cos * cos))]


def test_tiny_set_matches_a_hand_computation():
    # cosines with the gold sentence: a 0.9, b 0.5, c 0.3, d 0.1; team: a, c helpful
    cosines = {"a": 0.9, "b": 0.5, "c": 0.3, "d": 0.1}
    vectors = {GOAL_SENTENCES["gold"]: [1.0, 0.0], **{k: _unit(v) for k, v in cosines.items()}}
    embedder = FixedEmbedderDouble(vectors, default=[0.0, 1.0])
    data = JudgeSet(
        captions=list(cosines),
        sources=[""] * 4,
        labels={"gold": [1, 0, 1, 0]},
        pairs=[Pair("a", "b", "gold", 1.0), Pair("d", "c", "gold", 1.0)],
    )
    answers = similarity_answers(data, embedder=embedder)
    np.testing.assert_allclose(answers.scores["gold"], [0.9, 0.5, 0.3, 0.1], atol=1e-6)
    report = summarise(data, at_threshold(answers, 0.4), calibration="none", quantile=0.9, window=8)
    row = report["per_goal"]["gold"]
    # positives {a 0.9, c 0.3} vs negatives {b 0.5, d 0.1}: a>b, a>d, c<b, c>d -> 3 of 4
    assert row["auc"] == 0.75
    # s > 0.4 calls a and b helpful: a right, b wrong, c wrong (missed), d right
    assert row["accuracy"] == 0.5 and row["positive_rate"] == 0.5 and row["precision"] == 0.5
    # pairs: a over b agrees with the team, d over c (0.1 < 0.3) disagrees
    assert report["pair_agreement"] == 0.5
    assert answers.invalid == 0 and answers.labelled == 4


@pytest.mark.slow
def test_judge_command_report_matches_its_answers(tmp_path, capsys):
    from cluster.cli import main

    out, ans = tmp_path / "report.json", tmp_path / "answers.csv"
    args = ["judge", "--embedding", "all-minilm-l6-v2", "--goals", "gold,stairs", "--limit", "80"]
    assert main([*args, "--json", str(out), "--answers", str(ans), "--no-progress"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "Loading weights" not in captured.err  # transformers' bar, silenced as local.py does
    report = json.loads(out.read_text())
    with ans.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 160
    for goal in ("gold", "stairs"):
        pos = [float(r["judge"]) for r in rows if r["goal"] == goal and r["team"] == "1"]
        neg = [float(r["judge"]) for r in rows if r["goal"] == goal and r["team"] == "0"]
        wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
        assert report["per_goal"][goal]["auc"] == round(wins / (len(pos) * len(neg)), 4)
        called = [float(r["judge"]) > 0.4 for r in rows if r["goal"] == goal]
        assert report["per_goal"][goal]["positive_rate"] == round(sum(called) / 80, 4)
    assert report["judge"]["threshold"] == 0.4 and "threshold 0.4" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--embedding", "fasttext"], "unknown embedding 'fasttext'; choose one of: all-minilm"),
        (["--embedding", "all-minilm-l6-v2", "--threshold", "1"], "--threshold must be in [-1, 1)"),
        (["--embedding", "all-minilm-l6-v2", "--pairs", "ranking"], "--pairs ranking asks an LLM"),
    ],
)
def test_bad_similarity_judge_arguments_exit_2_naming_them(args, message, capsys):
    from cluster.cli import main

    assert main(["judge", *args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err
