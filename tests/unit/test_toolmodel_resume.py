"""`mtr simulator train --resume`: a checkpoint continues only on the pairs it trained on, at the step it saved."""

from __future__ import annotations

import json

import pytest

from controller.commands.toolmodel import ToolModelError, pairs_fingerprint, restore
from controller.stages.sft import STATE_FILE


class RecordingLearner:
    def __init__(self, version: int) -> None:
        self.version = version
        self.restored: list[str] = []

    def restore_checkpoint(self, path: str) -> int:
        self.restored.append(path)
        return self.version


def _pair(observation: str) -> dict:
    return {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                         {"role": "assistant", "content": observation}]}  # fmt: skip


def _checkpoint(tmp_path, step: int, fingerprint: str):
    target = tmp_path / f"step-{step:06d}"
    target.mkdir()
    (target / STATE_FILE).write_text(json.dumps({"step": step, "pairs": fingerprint}))
    return target


def test_the_fingerprint_follows_the_pairs_and_their_order():
    pairs = [_pair("a"), _pair("b")]
    assert pairs_fingerprint(pairs) == pairs_fingerprint([_pair("a"), _pair("b")])
    assert pairs_fingerprint(pairs) != pairs_fingerprint(pairs[::-1])
    assert pairs_fingerprint(pairs) != pairs_fingerprint([_pair("a")])


def test_restore_loads_the_checkpoint_and_returns_its_step(tmp_path):
    pairs = [_pair("a")]
    checkpoint = _checkpoint(tmp_path, 50, pairs_fingerprint(pairs))
    learner = RecordingLearner(version=50)
    assert restore(learner, checkpoint, pairs_fingerprint(pairs)) == 50
    assert learner.restored == [str(checkpoint)]


def test_restore_refuses_a_checkpoint_of_other_pairs_before_loading_it(tmp_path):
    checkpoint = _checkpoint(tmp_path, 50, pairs_fingerprint([_pair("a")]))
    learner = RecordingLearner(version=50)
    with pytest.raises(ToolModelError, match="trained on other pairs"):
        restore(learner, checkpoint, pairs_fingerprint([_pair("b")]))
    assert learner.restored == []


def test_restore_refuses_a_learner_that_restored_another_step(tmp_path):
    pairs = [_pair("a")]
    checkpoint = _checkpoint(tmp_path, 50, pairs_fingerprint(pairs))
    with pytest.raises(ToolModelError, match="restored version 49, the state says 50"):
        restore(RecordingLearner(version=49), checkpoint, pairs_fingerprint(pairs))
