"""Pre-flight checks of the files a run opens, before Ray starts: the label store, the
checkpoints (that they can be read; loading them is cluster/checkpoint.py's), the model cache
and a fitted Motif reward (reward_model.path). A file that cannot be used is a ConfigError
(exit 2) naming the file and what to do, rather than an actor dying inside Ray with the reason at
the end of its traceback."""

from __future__ import annotations

import os
from pathlib import Path

from cluster.config import ConfigError, RunConfig


def check_run_files(config: RunConfig, *, checkpoints: bool = True) -> list[str]:
    """Raise ConfigError when a file this run will open is unreadable or corrupt; return console
    lines about files that load but will not do what the user expects (a fitted Motif reward
    that barely tells captions apart). Reads only, except that model-cache work folders of dead
    conversions are removed. `checkpoints=False` (a --fresh start, which sets them aside unread)
    skips the checkpoints."""
    if checkpoints:
        _check_checkpoints(Path(config.run_dir))
    from cluster.annotation import label_store_path, wants_annotator

    notices = []
    if config.reward_model.name == "motif":
        from reward_models.motif import MotifFileError, load_fitted

        try:
            fitted = load_fitted(config.reward_model.path)
        except MotifFileError as exc:
            raise ConfigError(f"config key 'reward_model.path': {exc}") from None
        if (notice := barely_fitted_notice(config.reward_model.path, fitted)) is not None:
            notices.append(notice)
    if not wants_annotator(config):
        return notices
    from annotator.label_store import LabelStoreError, verify_store

    try:
        verify_store(label_store_path(config))
    except LabelStoreError as exc:
        raise ConfigError(str(exc)) from None
    ann = config.annotator
    if ann.backend != "openai" and ann.node_resource is None:  # else no local model, or not here
        from annotator.model_store import ModelStoreError, verify_cache

        try:
            verify_cache(ann.model)
        except ModelStoreError as exc:
            raise ConfigError(str(exc)) from None
    return notices


def barely_fitted_notice(path: str, fitted) -> str | None:
    """The line for a fitted Motif reward (`fitted`, read from `path`) that barely tells captions
    apart (reward_models.motif.barely_fitted), or None."""
    from reward_models.motif import barely_fitted

    why = barely_fitted(fitted)
    if why is None:
        return None
    return (
        f"reward_model.path {path}: {why}. Annotate pairs with a judge that decides them "
        "(`rogueray annotate`, an LLM backend) and fit it again"
    )


def _check_checkpoints(run_dir: Path) -> None:
    from cluster.checkpoint import checkpoint_dir, list_checkpoints

    folder = checkpoint_dir(run_dir)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ConfigError(
            f"{folder} is not a folder, so this run's checkpoints cannot be kept there; move it "
            "aside or use another run_dir"
        )
    if not os.access(folder, os.R_OK | os.X_OK):
        raise ConfigError(
            f"the checkpoint folder {folder} cannot be read by this user; fix its permissions "
            f"(`chmod u+rx {folder}`) to resume this run, or use another run_dir"
        )
    for path in list_checkpoints(run_dir):
        try:
            with open(path, "rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConfigError(
                f"checkpoint {path} cannot be read ({exc.strerror or exc}); fix it (its "
                f"permissions: `chmod u+r {path}`) or move it out of {folder} to resume from "
                "the checkpoint before it"
            ) from None
