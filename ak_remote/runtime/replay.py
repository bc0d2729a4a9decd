"""A resumed run's ClearML record gets the curves of the trials it restored, not only new ones.

The restored trials were trained (and reported) by the killed process; its ClearML session may
be lost or separate. Their TensorBoard event files survive in the run folder, so the resumed
session reports their epoch scalars again, under the same titles and series the live callback
uses (`epoch_loss`, `trial-00/train`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ak_remote.runtime.callbacks import TRIAL_PREFIX

SPLITS = ("train", "validation")


def replay_trials(board: Path, sink: Any, trial_ids: set[str] | None = None) -> int:
    """Report the epoch scalars of every trial folder under `board`; returns how many."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    count = 0
    if not board.is_dir():
        return 0
    for trial in sorted(p for p in board.iterdir() if p.is_dir()):
        if not trial.name.startswith(TRIAL_PREFIX):
            continue  # the final fit is trained again, and reported, by this run
        if trial_ids is not None and trial.name not in trial_ids:
            continue
        for split in SPLITS:
            split_dir = trial / split
            if not split_dir.is_dir():
                continue
            events = EventAccumulator(str(split_dir), size_guidance={"tensors": 0})
            events.Reload()
            for tag in events.Tags().get("tensors", []):
                if not tag.startswith("epoch_"):
                    continue
                for event in events.Tensors(tag):
                    value = float(tensor_util.make_ndarray(event.tensor_proto))
                    if math.isfinite(value):
                        # TensorBoard counts epochs from 0; ClearML iterations are epochs from 1
                        # (as ak_remote.runtime.callbacks reports them).
                        sink.report_scalar(tag, f"{trial.name}/{split}", value, event.step + 1)
                        count += 1
    return count
