"""Champion history: one model's intervals (cluster bootstrap over drives) and the plot. Pure, no MLflow."""

from __future__ import annotations

import io

import numpy as np

from argus_tasks.models import metrics as M
from argus_tasks.models.champion_history import candidate_intervals
from argus_tasks.models.history_plot import render


def _records(rng, n_seq: int, per_seq: int, noise: float, c: int = 4, d: int = 6):
    n = n_seq * per_seq
    seq = np.repeat(np.arange(n_seq), per_seq).astype(str)
    drive = rng.uniform(0.5, 1.5, n_seq)[np.repeat(np.arange(n_seq), per_seq)]  # frames of a drive move together
    conf = np.stack([np.eye(c) * 100 + noise * k * (1 - np.eye(c)) for k in drive])
    feats = rng.normal(0, 1, (n, d)) + drive[:, None]
    return conf, feats, seq


def test_each_point_is_the_whole_set_statistic_inside_its_interval():
    rng = np.random.default_rng(0)
    gen_conf, gen_f, gen_seq = _records(rng, 6, 4, 8.0)
    real_conf, real_f, real_seq = _records(rng, 5, 4, 3.0)
    out = candidate_intervals(gen_conf, real_conf, gen_f, real_f, gen_seq, real_seq, n_boot=200)
    gaps = M.realism_gaps(gen_conf, real_conf)
    assert abs(out["classwise_gap"]["point"] - gaps["classwise_gap"]) < 1e-12
    assert abs(out["label_preservation"]["point"] - M.mean_iou(gen_conf.sum(0))) < 1e-12
    for metric, iv in out.items():
        assert iv["lo"] < iv["point"] < iv["hi"], (metric, iv)
    # one drive per side says nothing about drive-to-drive variation: points, no intervals
    one = candidate_intervals(gen_conf[:4], real_conf[:4], gen_f[:4], real_f[:4], gen_seq[:4], real_seq[:4])
    assert one["classwise_gap"]["point"] is not None and one["classwise_gap"]["lo"] is None


def test_correlated_drives_give_wider_intervals_than_frames_taken_as_independent():
    rng = np.random.default_rng(1)
    gen_conf, gen_f, gen_seq = _records(rng, 6, 8, 10.0)
    real_conf, real_f, real_seq = _records(rng, 6, 8, 2.0)
    by_drive = candidate_intervals(gen_conf, real_conf, gen_f, real_f, gen_seq, real_seq)["classwise_gap"]
    by_frame = candidate_intervals(gen_conf, real_conf, gen_f, real_f)["classwise_gap"]
    assert (by_drive["hi"] - by_drive["lo"]) > 1.5 * (by_frame["hi"] - by_frame["lo"]), (by_drive, by_frame)


def test_the_plot_marks_moves_and_draws_without_any_point():
    from PIL import Image

    points = [{"at": "2026-11-02T02:00:00Z", "judge": {"version": "1"},
               "models": [{"role": "challenger", "version": "1",
                           "intervals": {"kid": {"point": 0.02, "lo": 0.01, "hi": 0.03}}}]}]
    entries = [{"seq": 1, "kind": "promotion", "state": "committed", "from": None, "to": "1",
                "when": "2026-11-02T02:05:00Z"},
               {"seq": 2, "kind": "rollback", "state": "committed", "from": "2", "to": "1",
                "when": "2026-11-03T09:00:00Z"}]
    for pts, ents in ((points, entries), ([], [])):
        png = render("argus-weather-fog", "fog", pts, ents, "1")
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.size == (1100, 850)
