"""`rogueray labels`: summary and export of a real label store, and a clear error without one."""

import csv
import json

from actors.messages import CaptionLabel
from annotator.label_store import LabelStore
from cluster.cli import main


def test_summary_and_exports(tmp_path, capsys):
    store = LabelStore(tmp_path / "labels.sqlite", model_id="m", prompt_version="p1")
    store.put_captions([CaptionLabel("You kill the newt!", 1.0), CaptionLabel("It's a wall.", 0.0)])
    store.record_sightings({"It's a wall.": 40, "You kill the newt!": 3, "Hello": 1})
    store.close()
    assert main(["labels", str(tmp_path), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "caption labels 2 (positive 50.0%)" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ") and "caption labels" not in ln]
    assert lines[0].split()[:3] == ["seen", "label", "caption"]  # the columns are named
    assert "It's a wall." in lines[1] and "40" in lines[1] and "0.00" in lines[1]
    assert "You kill the newt!" in lines[2] and "1.00" in lines[2]
    assert main(["labels", str(tmp_path), "--export", str(tmp_path / "out.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert {r["caption"]: float(r["value"]) for r in rows} == {
        "You kill the newt!": 1.0,
        "It's a wall.": 0.0,
    }
    assert (
        main(["labels", str(tmp_path / "labels.sqlite"), "--export", str(tmp_path / "o.jsonl")])
        == 0
    )
    assert len([json.loads(ln) for ln in open(tmp_path / "o.jsonl")]) == 2


def test_missing_store_and_bad_export_name(tmp_path, capsys):
    assert main(["labels", str(tmp_path)]) == 2
    assert "no label store at" in capsys.readouterr().err
    LabelStore(tmp_path / "labels.sqlite", model_id="m", prompt_version="p").close()
    assert main(["labels", str(tmp_path), "--export", str(tmp_path / "x.txt")]) == 2
    assert "must end in .csv or .jsonl" in capsys.readouterr().err


def test_a_file_that_is_no_database_is_named_and_left_alone(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# not a label store\n")
    assert main(["labels", str(readme)]) == 2
    err = capsys.readouterr().err
    assert "is not a label store (not an SQLite file)" in err and "give a run directory" in err
    assert "mv " not in err  # no advice to move the user's own file aside
    assert readme.read_text() == "# not a label store\n"


def test_a_damaged_store_in_a_run_directory_is_named_as_one(tmp_path, capsys):
    (tmp_path / "labels.sqlite").write_bytes(bytes(range(256)) * 16)  # not SQLite any more
    assert main(["labels", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a readable rogueray label store" in err and "Move it aside" in err
