"""The tiny generator learns: its losses fall, and on fog its frames move towards real fog.

KID is measured in the session segmenter's feature space on held-out frames, against identity
(the clear source frames as they are). Kept affordable: 60 steps of the tiny config at its own
learning rate (~20 CPU-seconds). Over seeds 0-2, 60 steps put the generated frames' KID at 0.2-0.45x
identity's (the bar is 0.8x) and the PatchNCE loss at 0.3-0.4x its first logged value (bar 0.7x);
fewer steps or a higher learning rate leave too thin a margin (0.5-0.85x identity at 30-50 steps).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from argus_tasks.models import frames as F
from argus_tasks.models.config import load_config
from argus_tasks.models.generator import WeatherTranslator, translate
from argus_tasks.models.metrics import kid
from argus_tasks.models.segmenter import predict
from argus_tasks.models.trainer import train_translator

STEPS = 60
LOG_EVERY = 5


def _load(template, condition, splits):
    from argus_tasks.data.manifest import read_manifest

    manifest = read_manifest(template)
    frames, _ = F.load_frames(template, F.select(manifest, condition, splits), labels=False)
    return frames


@pytest.mark.slow
def test_tiny_generator_learns_fog(dataset_template, session_segmenter):
    from argus_tasks.models.registry_adapter import Registry
    from argus_tasks.models.segmenter_registry import load_version

    torch.manual_seed(0)
    cfg = load_config("tiny", {"steps": STEPS, "log_every_steps": LOG_EVERY})
    model = WeatherTranslator(cfg, "fog")
    clear, fog = _load(dataset_template, "clear", ("train",)), _load(dataset_template, "fog", ("train",))
    outcome = train_translator(model, clear, fog, steps=STEPS, seed=0)
    history = outcome.loss_history
    assert outcome.steps == STEPS and len(history) == STEPS // LOG_EVERY
    first, last = history[0], np.mean([h["loss_nce"] for h in history[-3:]])
    assert last < 0.7 * first["loss_nce"], history  # content loss falls as the encoder learns
    assert np.mean([h["loss_g"] for h in history[-3:]]) < first["loss_g"], history

    segmenter = load_version(Registry(), session_segmenter["model_name"], session_segmenter["version"])
    source = _load(dataset_template, "clear", ("val", "test")).float() / 255.0
    real = _load(dataset_template, "fog", ("val", "test")).float() / 255.0
    generated = translate(model.G, source, seed=0)
    _, f_real = predict(segmenter, real)
    _, f_gen = predict(segmenter, generated)
    _, f_id = predict(segmenter, source)
    kid_gen = kid(f_gen, f_real, n_subsets=20, subset_size=40)["kid"]
    kid_id = kid(f_id, f_real, n_subsets=20, subset_size=40)["kid"]
    assert kid_gen < 0.8 * kid_id, (kid_gen, kid_id)
    # the physics head veils and attenuates: the scene is still there
    assert (generated - source).abs().mean() > 0.02
