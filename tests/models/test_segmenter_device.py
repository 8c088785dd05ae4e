"""The segmenter trains and infers on the GPU when there is one, on the CPU otherwise."""

from __future__ import annotations

import pytest
import torch

from argus_tasks.data.schema import CLASSES
from argus_tasks.models.segmenter import content_hash, default_device, model_device, predict, train_segmenter

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def _data(n: int = 8, size: int = 16):
    gen = torch.Generator().manual_seed(3)
    frames = torch.rand(n, 3, size, size, generator=gen)
    labels = torch.randint(0, len(CLASSES), (n, size, size), generator=gen, dtype=torch.uint8)
    return frames, labels


def test_training_without_a_device_uses_the_default_device_and_is_deterministic():
    frames, labels = _data()
    auto = train_segmenter(frames, labels, steps=3, batch_size=4, width=4)
    assert model_device(auto).type == default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    on_cpu = train_segmenter(frames, labels, steps=3, batch_size=4, width=4, device="cpu")
    assert model_device(on_cpu).type == "cpu"
    if not torch.cuda.is_available():
        assert content_hash(auto) == content_hash(on_cpu)
    pred, feats = predict(on_cpu, frames)
    assert pred.shape == (8, 16, 16) and feats.shape == (8, on_cpu.feature_dim)


@cuda
def test_on_a_gpu_the_segmenter_trains_and_predicts_there_and_returns_cpu_results():
    frames, labels = _data()
    model = train_segmenter(frames, labels, steps=3, batch_size=4, width=4, device="cuda")
    assert model_device(model).type == "cuda"
    pred, feats = predict(model, frames)  # CPU frames in, CPU arrays out
    assert pred.shape == (8, 16, 16) and feats.dtype.name == "float32"
    mapped = model.map_labels(labels)
    assert mapped.device.type == "cpu"  # labels stay where they are (the metrics are numpy)
    back = model.cpu()
    cpu_pred, _ = predict(back, frames)
    assert (cpu_pred == pred).mean() > 0.99
