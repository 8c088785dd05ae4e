"""The gallery's cards, assembled from this run: its challenger's scores and thumbnails, its frames.

A hard frame that this run did not evaluate (another revision's frame) still gets a card, with the
scores of its newest evaluation and placeholders where this run has no image.
"""

from __future__ import annotations

import io
import logging

import numpy as np

from argus_tasks.hardframes.gallery import png_data_uri
from argus_tasks.hardframes.record import THUMBS_FILE
from argus_tasks.models.frame_scores import SCORES_FILE

log = logging.getLogger(__name__)
MAX_SIDE = 128  # embedded images are downscaled to this (the page shows them at 112 px)


def _small(rgb: np.ndarray) -> np.ndarray:
    if max(rgb.shape[:2]) <= MAX_SIDE:
        return rgb
    from PIL import Image

    im = Image.fromarray(rgb)
    im.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    return np.asarray(im)


class RunImages:
    """Frames of this run's data (source and real neighbours) and the challenger's thumbnails."""

    def __init__(self, run, condition: str):
        from argus_tasks.data.access import ACCEPTED

        self.run, self.manifest, self.thumbs, self.rows = run, None, {}, {}
        # display only: the accepted manifest as it is, and single frames read from the store (on S3, no
        # download of the whole data folder for a few thumbnails)
        if run.exists(ACCEPTED):
            manifest = run.read_dataframe(ACCEPTED)
            self.manifest = manifest.drop_duplicates("frame_id").set_index("frame_id", drop=False)
        else:
            log.warning("no accepted manifest in %s: gallery cards show scores without frames", run.url())
        where = f"evaluate/{condition}/{THUMBS_FILE}"
        if run.exists(where):
            with np.load(io.BytesIO(run.read_bytes(where)), allow_pickle=False) as npz:
                self.thumbs = dict(zip(npz["frame_id"].tolist(), npz["thumbs"], strict=True))
        scores = f"evaluate/{condition}/{SCORES_FILE}"
        if run.exists(scores):
            table = run.read_dataframe(scores)
            chal = table[table["candidate"] == "challenger"]
            self.rows = {str(r["frame_id"]): r for r in chal.to_dict("records")}

    def frame(self, frame_id: str) -> str | None:
        if self.manifest is None or frame_id not in self.manifest.index:
            return None
        from PIL import Image

        where = f"data/{self.manifest.loc[frame_id, 'frame_path']}"
        if not self.run.exists(where):
            return None
        with Image.open(io.BytesIO(self.run.read_bytes(where))) as im:
            return png_data_uri(_small(np.asarray(im.convert("RGB"))))

    def generated(self, frame_id: str) -> str | None:
        t = self.thumbs.get(frame_id)
        return png_data_uri(t) if t is not None else None


def _flags(row: dict) -> list[str]:
    names = (("finite", "not finite"), ("fidelity_ok", "fidelity"), ("change_ok", "change"),
             ("realism_ok", "realism"))
    import pandas as pd

    return [name for col, name in names if col in row and not pd.isna(row[col]) and not bool(row[col])]


def _card(frame: dict, images: RunImages) -> dict:
    row = images.rows.get(frame["frame_id"])
    card = {"frame_id": frame["frame_id"], "sequence": frame.get("sequence"), "hits": frame["hits"],
            "seen": frame["seen"], "source": images.frame(frame["frame_id"]),
            "generated": images.generated(frame["frame_id"]), "neighbours": [], "flags": []}
    if row is not None:
        t = row.get("capture_time")
        card.update(label_fidelity=row["label_fidelity"], realism_ratio=row["realism_ratio"],
                    model_key=row["model_key"], flags=_flags(row),
                    capture=t.strftime("%Y-%m-%d %H:%M UTC") if hasattr(t, "strftime") else str(t))
        ids = [i for i in str(row.get("nn_real_ids") or "").split(";") if i]
        card["neighbours"] = [(images.frame(i), i) for i in ids]
    else:
        card.update(label_fidelity=frame.get("label_fidelity"), realism_ratio=frame.get("realism_ratio"),
                    model_key=f"{frame.get('last_evaluation', '?')} (not evaluated in this run)", capture="?")
    return card


def sections(run, condition: str, content: dict, max_frames: int) -> tuple[list[dict], int]:
    """``(sections, frames shown)``: the hardest ``max_frames`` frames in their groups, oversampled groups first."""
    images = RunImages(run, condition)
    frames = content["frames"][:max_frames]
    counts = {g["value"]: g for g in content["groups"].get("group", [])}
    oversampled = set(content["oversample"]["keys"])
    by_group: dict[str, list[dict]] = {}
    for f in frames:
        by_group.setdefault(f["group"], []).append(f)
    order = sorted(by_group, key=lambda g: (g not in oversampled, -len(by_group[g]), g))
    out = []
    for g in order:
        info = counts.get(g, {})
        out.append({"title": g, "oversampled": g in oversampled, "n_hard": info.get("n_hard", len(by_group[g])),
                    "n_scored": info.get("n_scored", "?"), "cards": [_card(f, images) for f in by_group[g]]})
    return out, len(frames)
