"""The code's shape, checked: imports run one way through the layers (messages at the bottom,
cluster at the top), and product files and functions stay small. Exceptions are listed here
with their reason, so a new one fails until someone writes down why."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "config_schema": -1,
    "actors": 0,
    "reward_models": 1,
    "learner": 2,
    "annotator": 2,
    "cluster": 3,
}
"""A package may import packages of a lower layer only. config_schema/ is the bottom: standard
library only, the config machinery each package's config section uses. actors/ is next because
it holds actors/messages.py, the messages every package shares; learner and annotator never import
each other (labels reach the learner through the driver)."""

MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60
LONG_FILES: dict[str, str] = {}  # file -> why it may be longer: none at present
LONG_FUNCTIONS = {
    "learner/losses.py:appo_loss": "one loss, term by term, compared against a slow reference",
}


def _product_files():
    for package in LAYERS:
        yield from sorted((ROOT / package).rglob("*.py"))


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_imports_never_run_upward():
    upward = []
    for path in _product_files():
        name = path.relative_to(ROOT).as_posix()
        source = name.split("/")[0]
        for module in _imports(ast.parse(path.read_text())):
            target = module.split(".")[0]
            if target in LAYERS and target != source:
                if LAYERS[target] >= LAYERS[source]:
                    upward.append(f"{name} imports {module}")
    assert upward == []


MESSAGES = ("actors.messages", "actors.observation_slots")
"""The messages every package shares, and the shared-memory form a fragment's observations take
between a worker and a learner on one machine."""


def test_reward_models_and_learner_take_only_messages_from_actors():
    """The pure core must not pull in envs or workers: from actors/, only the messages."""
    found = []
    for package in ("reward_models", "learner", "annotator"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for module in _imports(ast.parse(path.read_text())):
                if module.startswith("actors") and module not in MESSAGES:
                    found.append(f"{path.relative_to(ROOT)} imports {module}")
    assert found == []


def test_messages_import_only_numpy_and_the_standard_library():
    found = []
    for name in MESSAGES:
        path = ROOT / (name.replace(".", "/") + ".py")
        for module in _imports(ast.parse(path.read_text())):
            top = module.split(".")[0]
            if top != "numpy" and top != "__future__" and top not in sys.stdlib_module_names:
                found.append(f"{name} imports {module}")
    assert found == []


def _function_lines(node) -> int:
    """Lines of a function without its docstring."""
    body = node.body
    docstring = (
        body[0].end_lineno - body[0].lineno + 1
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
        else 0
    )
    return node.end_lineno - node.lineno + 1 - docstring


def test_files_and_functions_stay_small():
    long_files, long_functions = [], []
    for path in _product_files():
        name = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES and name not in LONG_FILES:
            long_files.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                key = f"{name}:{node.name}"
                if _function_lines(node) > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                    long_functions.append(f"{key}: {_function_lines(node)} lines")
    assert long_files == [] and long_functions == []
