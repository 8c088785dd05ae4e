"""Checkpoints load with ``torch.load(weights_only=True)``: a planted pickle is refused, never run."""

from __future__ import annotations

import io
import os

import pytest
import torch

from argus_tasks.contract import PermanentStepError
from argus_tasks.models.checkpoints import CheckpointStore
from argus_tasks.store import RunStore


class Payload:
    """What an attacker who can write the bucket would plant: unpickling it runs code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_training_checkpoint_holds_only_weights(tmp_path):
    from argus_tasks.models.config import load_config
    from argus_tasks.models.generator import WeatherTranslator
    from argus_tasks.models.trainer import train_translator

    cfg = load_config("tiny", {"ngf": 8, "n_blocks": 1, "batch_size": 2, "nce_patches": 16, "nce_dim": 16})
    frames = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    ckpts = CheckpointStore(RunStore(str(tmp_path), "dag", "run"), "ckpt")
    train_translator(WeatherTranslator(cfg, "fog"), frames, frames, steps=2, checkpoints=ckpts)
    raw = (tmp_path / "runs/dag/run/ckpt/step-00000002.pt").read_bytes()
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    assert state["step"] == 2 and isinstance(state["rng"]["sampler"], torch.Tensor)
    assert ckpts.load_latest()["step"] == 2


def test_a_checkpoint_with_a_pickled_object_is_refused_not_executed(tmp_path):
    run = RunStore(str(tmp_path), "dag", "run")
    ckpts = CheckpointStore(run, "train/fog/checkpoints")
    ckpts.save(2, {"model": {"w": torch.zeros(2)}})  # a good, older checkpoint
    marker = tmp_path / "code-ran"
    ckpts.save(4, {"model": {"w": torch.zeros(2)}, "x": Payload(str(marker))})
    with pytest.raises(PermanentStepError, match=r"refusing to load checkpoint .*step-00000004\.pt.*NOT unpickled"):
        ckpts.load_latest()
    assert not marker.exists(), "the planted object was unpickled: its code ran"


def test_a_torn_checkpoint_is_still_skipped_for_an_older_one(tmp_path):
    run = RunStore(str(tmp_path), "dag", "run")
    ckpts = CheckpointStore(run, "ckpt")
    ckpts.save(2, {"model": {"w": torch.ones(2)}})
    run.write_bytes("ckpt/step-00000004.pt", b"PK\x03\x04 torn")
    run.write_bytes("ckpt/step-00000006.pt", b"not a checkpoint at all")
    assert ckpts.load_latest()["step"] == 2
