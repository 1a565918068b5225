"""annotate's reading of answers into Motif's outcomes, with a scripted test double as the judge
(the real embedded model is in test_offline_motif.py): a judge biased to the first position,
asked in one order and in both; unreadable answers become unknown, stored aside, not asked
again; a judge that is down leaves pairs to be asked later."""

from __future__ import annotations

import asyncio

import pytest

from annotator.label_store import LabelStore
from cluster.motif_annotate import UNKNOWN, annotate_dataset, plan_annotation, read_unknown
from tests.doubles.scripted_backend import ScriptedBackendDouble

CAPTIONS = ["You kill the newt!", "It's a wall.", "$ - 5 gold pieces.", "", "Never mind.",
            "You hear a door open.", "There is a staircase down here."]  # fmt: skip


def _run(tmp_path, backend, *, pairs=10, both_orders=False, version="v"):
    store = LabelStore(tmp_path / "labels.sqlite", model_id="double", prompt_version=version)
    plan = plan_annotation(tmp_path, CAPTIONS, store, pairs=pairs)
    report = asyncio.run(annotate_dataset(
        plan, backend=backend, store=store, goal="default", style="direct", chunk_size=4,
        batch_size=3, both_orders=both_orders,
    ))  # fmt: skip
    labels = store.pair_labels()
    store.close()
    return report, labels


def test_a_position_bias_is_a_soft_preference_and_both_orders_cancel_it(tmp_path):
    # P(first) 0.8, second and tie 0.1 each: expected preference 0.8 + 0.1 * 0.5 = 0.85
    one = ScriptedBackendDouble(lambda text: 0.8)
    report, labels = _run(tmp_path, one)
    assert report.labelled == len(labels) == 10 and len(one.asked) == 10
    assert all(x.preference == pytest.approx(0.85) for x in labels)
    both = ScriptedBackendDouble(lambda text: 0.8)
    report, labels = _run(tmp_path, both, both_orders=True, version="v+both-orders")
    assert len(both.asked) == 20 and len(set(both.asked)) == 20  # each order once
    assert all(x.preference == pytest.approx(0.5) for x in labels)
    assert "" not in {c for x in labels for c in (x.first, x.second)}


def test_unknowns_are_kept_aside_and_never_asked_again(tmp_path):
    garbage = ScriptedBackendDouble(lambda text: 0.5)
    garbage.garbage = True  # answers with none of the choices: unreadable
    report, labels = _run(tmp_path, garbage, pairs=6)
    assert report.unknown == 6 and labels == [] and len(garbage.asked) == 6
    assert len(read_unknown(tmp_path / UNKNOWN, ("double", "v"))) == 6
    fine = ScriptedBackendDouble(lambda text: 0.9)
    report, labels = _run(tmp_path, fine, pairs=10)
    assert report.done_before == 6 and len(labels) == 4 and len(fine.asked) == 4


def test_a_judge_that_is_down_leaves_the_pairs_unasked(tmp_path):
    down = ScriptedBackendDouble(lambda text: 0.9)
    down.down = True
    report, labels = _run(tmp_path, down, pairs=5)
    assert report.failed == 5 and labels == [] and report.done == 0


def test_fit_reward_asks_which_group_when_there_are_several(tmp_path):
    from cluster.collect import DatasetError
    from cluster.fit_reward import choose_group

    _run(tmp_path, ScriptedBackendDouble(lambda text: 0.8), pairs=3)
    assert choose_group(tmp_path / "labels.sqlite", None) == ("double", "v")
    _run(tmp_path, ScriptedBackendDouble(lambda text: 0.8), pairs=3, version="v+both-orders")
    with pytest.raises(DatasetError, match="several judges.*--prompt-version v\\+both-orders"):
        choose_group(tmp_path / "labels.sqlite", None)
    assert choose_group(tmp_path / "labels.sqlite", ("double", "v")) == ("double", "v")
