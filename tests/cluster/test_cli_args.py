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
