"""The CLI's shared argument types refuse bad values at parse time, naming the option."""

import argparse

import pytest

from cluster.cli_args import output_file, positive_int


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rogueray", exit_on_error=False)
    parser.add_argument("--limit", type=positive_int)
    parser.add_argument("--json", type=output_file)
    return parser


@pytest.mark.parametrize("value", ["0", "-3", "abc", "2.5"])
def test_a_count_below_one_or_not_whole_is_refused(value):
    with pytest.raises(argparse.ArgumentError, match="argument --limit"):
        _parser().parse_args(["--limit", value])


def test_a_count_of_one_or_more_is_kept():
    assert _parser().parse_args(["--limit", "7"]).limit == 7


def test_an_output_file_in_a_missing_folder_or_naming_a_folder_is_refused(tmp_path):
    with pytest.raises(argparse.ArgumentError, match="does not exist"):
        _parser().parse_args(["--json", str(tmp_path / "nope" / "r.json")])
    with pytest.raises(argparse.ArgumentError, match="is a folder"):
        _parser().parse_args(["--json", str(tmp_path)])
    assert _parser().parse_args(["--json", str(tmp_path / "r.json")]).json == tmp_path / "r.json"


def test_a_mistyped_command_or_choice_gets_a_suggestion(capsys):
    from cluster.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["trian"])
    assert exit_.value.code == 2
    assert "invalid choice: 'trian'" in (err := capsys.readouterr().err)
    assert err.rstrip().endswith("did you mean 'train'?")
    with pytest.raises(SystemExit):
        main(["zzz"])  # nothing close: argparse's own message, no guess
    assert "did you mean" not in capsys.readouterr().err
