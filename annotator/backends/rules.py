"""A rules judge: labels captions with regular expressions from a YAML file, no language model.

It is a **control**, not a model of NetHack: it says "helpful" exactly when a caption matches a
pattern someone wrote down. Two uses. (1) A cheap, transparent labeller to start from: every
label can be traced to one line of the YAML. (2) The control that separates "does the
machinery (annotator, label store, reward model, learner) turn good labels into progress?" from
"is this LLM a good judge?" (`rogueray judge annotator.backend=rules` measures it).

It implements ``LLMBackend`` on the project's own prompts (annotator/prompts.py): it reads the
goal from the prompt's goal sentence and the caption(s) from the ``<message>...</message>`` tags,
so it runs behind the real Annotator like any other backend.

YAML format (the shipped one is annotator/rules_default.yaml)::

    default_label: 0          # label when no rule of the goal matches (optional, default 0)
    goals:
      combat:                 # a key of annotator.prompts.GOALS
        - pattern: '\\bYou (kill|destroy) '   # Python regex, searched in the caption
          label: 1                           # 0..1; the first matching rule decides
        - pattern: 'is killed!'
          label: 0

A goal the YAML does not list gets ``default_label`` for every caption.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from annotator.backends.base import (
    Chat,
    LLMBackend,
    norm_token,
    normalize_chat,
    validate_choices,
)
from annotator.prompts import EMPTY_CAPTION, GOALS

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules_default.yaml"
"""The shipped rules (package data of `annotator`)."""

# Model names that mean "the shipped rules": the annotator config's default model name (so that
# `annotator.backend=rules` alone works) and the word itself.
_DEFAULT_NAMES = ("smollm2-135m", "rules", "default")

_MESSAGE = re.compile(r"<message>(.*?)</message>", re.DOTALL)


class RulesError(ValueError):
    """A rules YAML that cannot be used; the message names the file and the bad entry."""


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    label: float


@dataclass(frozen=True)
class RuleSet:
    path: Path
    digest: str
    default_label: float
    goals: dict[str, tuple[Rule, ...]]

    def label(self, caption: str, goal: str) -> float:
        """The first matching rule's label for `goal`, else the default label."""
        for rule in self.goals.get(goal, ()):
            if rule.pattern.search(caption):
                return rule.label
        return self.default_label

    def matching_rule(self, caption: str, goal: str) -> str | None:
        """The pattern that decides `caption` for `goal` (None: the default label)."""
        for rule in self.goals.get(goal, ()):
            if rule.pattern.search(caption):
                return rule.pattern.pattern
        return None


def _label_value(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise RulesError(f"{where}: label must be a number in [0, 1], got {value!r}")
    return float(value)


def load_rules(path: str | Path) -> RuleSet:
    """Read and check a rules YAML. RulesError names the file, the goal and the pattern at fault
    (a missing file, bad YAML, an unknown goal, an invalid regex, a label outside [0, 1])."""
    import yaml

    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(
            f"rules file {str(path)!r}: cannot read it ({exc.strerror or exc})"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"rules file {str(path)!r}: not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("goals"), dict):
        raise RulesError(
            f"rules file {str(path)!r}: expected a mapping with a 'goals' mapping "
            "(goal -> list of {pattern, label})"
        )
    unknown_keys = sorted(set(data) - {"goals", "default_label", "description"})
    if unknown_keys:
        raise RulesError(
            f"rules file {str(path)!r}: unknown top-level key(s) {', '.join(unknown_keys)}; "
            "allowed: goals, default_label, description"
        )
    default = _label_value(data.get("default_label", 0), f"rules file {str(path)!r}: default_label")
    goals: dict[str, tuple[Rule, ...]] = {}
    for goal, rules in data["goals"].items():
        where = f"rules file {str(path)!r}, goal {goal!r}"
        if goal not in GOALS:
            raise RulesError(f"{where}: unknown goal; allowed: {', '.join(GOALS)}")
        if not isinstance(rules, list):
            raise RulesError(f"{where}: expected a list of {{pattern, label}} entries")
        compiled = []
        for i, entry in enumerate(rules):
            at = f"{where}, rule {i + 1}"
            if (
                not isinstance(entry, dict)
                or set(entry) - {"pattern", "label", "note"}
                or ("pattern" not in entry or "label" not in entry)
            ):
                raise RulesError(f"{at}: expected {{pattern: REGEX, label: 0..1}}, got {entry!r}")
            pattern = entry["pattern"]
            if not isinstance(pattern, str) or not pattern:
                raise RulesError(f"{at}: pattern must be a non-empty string, got {pattern!r}")
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise RulesError(
                    f"{at}: pattern {pattern!r} is not a valid regex ({exc})"
                ) from None
            compiled.append(Rule(regex, _label_value(entry["label"], f"{at} ({pattern!r})")))
        goals[goal] = tuple(compiled)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    return RuleSet(path=path, digest=digest, default_label=default, goals=goals)


def _unescape(text: str) -> str:
    text = html.unescape(text)  # the prompt escapes &, <, > (prompts.escape_caption)
    return "" if text == EMPTY_CAPTION else text


def _goal_of(text: str) -> str | None:
    """The goal whose sentence the prompt states (prompts put it after "Goal: ")."""
    found = [goal for goal, sentence in GOALS.items() if f"Goal: {sentence}" in text]
    return found[0] if len(found) == 1 else None


def rules_path(model: str | Path) -> Path:
    """The YAML a ``model`` setting names (the shipped rules for the default names)."""
    return DEFAULT_RULES if str(model) in _DEFAULT_NAMES else Path(model).expanduser()


def rules_model_id(model: str | Path, rules: RuleSet | None = None) -> str:
    """What labels are keyed by: "rules:default@<hash>" or "rules:/abs/path.yaml@<hash>", the
    hash of the YAML text, so that labels of edited rules are kept apart (and never mixed with an
    LLM's in a shared label store). RulesError when the file is unusable."""
    path = rules_path(model)
    rules = rules or load_rules(path)
    name = "default" if path == DEFAULT_RULES else str(path.resolve())
    return f"rules:{name}@{rules.digest}"


class RulesBackend(LLMBackend):
    """Labels from regex rules (see the module docstring). ``model``: a rules YAML path; the
    annotator's default model name, "rules" or "default" mean the shipped
    annotator/rules_default.yaml."""

    def __init__(self, model: str | Path = "rules") -> None:
        super().__init__()
        self.rules = load_rules(rules_path(model))
        self.model_id = rules_model_id(model, self.rules)
        self._closed = False

    # -- reading our own prompts -------------------------------------------------------------
    def _parse(self, chat: Chat) -> tuple[str, list[str], bool] | None:
        """(goal, captions, reasoned?) of a prompt from annotator.prompts, or None."""
        norm = normalize_chat(chat)
        if isinstance(norm, str):
            everything, last = norm, norm
        else:
            everything = "\n".join(m["content"] for m in norm)
            last = norm[-1]["content"]
        goal = _goal_of(everything)
        captions = [_unescape(m) for m in _MESSAGE.findall(last)]
        if goal is None or len(captions) not in (1, 2):
            return None
        return goal, captions, "<answer>" in everything

    def _verdict(self, chat: Chat) -> tuple[str, float, bool] | None:
        """("cls" | "rank", value, reasoned): P(yes), or the preference for the first caption."""
        parsed = self._parse(chat)
        if parsed is None:
            return None
        goal, captions, reasoned = parsed
        labels = [self.rules.label(c, goal) for c in captions]
        if len(labels) == 1:
            return "cls", labels[0], reasoned
        a, b = labels
        return "rank", 1.0 if a > b else 0.0 if a < b else 0.5, reasoned

    def _unreadable(self) -> None:
        self.stats.invalid += 1
        self.notice(
            "rules_prompt",
            "the rules judge got a prompt it cannot read (it needs annotator/prompts.py's goal "
            "sentence and <message> tags); answered as invalid",
        )

    # -- LLMBackend ------------------------------------------------------------------------
    async def choice_probs(
        self, chats: Sequence[Chat], choices: Sequence[str]
    ) -> list[dict[str, float] | None]:
        self._check_open()
        choices = validate_choices(choices)
        keys = [norm_token(c) for c in choices]
        out: list[dict[str, float] | None] = []
        for chat in chats:
            self.stats.requests += 1
            verdict = self._verdict(chat)
            if verdict is None:
                self._unreadable()
                out.append({})
                continue
            kind, value, _ = verdict
            if kind == "cls" and set(keys) == {"yes", "no"}:
                probs = {"yes": value, "no": 1.0 - value}
            elif kind == "rank" and set(keys) == {"first", "second", "tie"}:
                probs = {"first": 0.0, "second": 0.0, "tie": 0.0}
                probs[{1.0: "first", 0.0: "second", 0.5: "tie"}[value]] = 1.0
            elif kind == "rank" and set(keys) == {"1", "2", "none"}:
                probs = {"1": 0.0, "2": 0.0, "none": 0.0}
                probs[{1.0: "1", 0.0: "2", 0.5: "none"}[value]] = 1.0
            else:
                self._unreadable()
                out.append({})
                continue
            out.append({c: probs[k] for c, k in zip(choices, keys, strict=True)})
        return out

    async def generate(
        self, chats: Sequence[Chat], *, max_tokens: int, temperature: float = 0.0
    ) -> list[str | None]:
        """The answer the prompt's format asks for: "<answer>yes</answer>" (reasoned) or "yes"
        (direct); ranking "<answer>1|2|none</answer>" or "first|second|tie". A soft label
        (rules may give 0.7) is answered yes when above 0.5."""
        self._check_open()
        out: list[str | None] = []
        for chat in chats:
            self.stats.requests += 1
            verdict = self._verdict(chat)
            if verdict is None:
                self._unreadable()
                out.append("")
                continue
            kind, value, reasoned = verdict
            if kind == "cls":
                word = "yes" if value > 0.5 else "no"
            elif reasoned:
                word = {1.0: "1", 0.0: "2", 0.5: "none"}[value]
            else:
                word = {1.0: "first", 0.0: "second", 0.5: "tie"}[value]
            out.append(f"<answer>{word}</answer>" if reasoned else word)
        return out

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the rules backend is closed")
