"""The hard-frame gallery: one self-contained static HTML page (images inlined as PNG data URIs).

It opens from the run folder, from an MLflow artifact view or from a mail attachment alike. Layout:
a header saying what the set is (condition, version, rule, evaluations), how to read a card, the
group tables (dominant classes, brightness, capture time, sequence: hard / scored / rate / lift),
then one section per oversampled-or-not group (dominant classes and brightness, the groups training
oversamples through), each a grid of cards: source, generated (this run's challenger, exactly as it
was scored), and the nearest real frames of the condition in the judge's feature space, with the
frame's scores and the gates it failed in red. No timestamps: the same inputs give the same bytes.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2430;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:2px solid #d7dce3;padding-bottom:4px}
.meta{color:#4a5568;margin:2px 0} code{background:#e9edf2;padding:1px 4px;border-radius:3px}
.legend{background:#fff;border:1px solid #d7dce3;border-radius:6px;padding:10px 14px;margin:14px 0;max-width:1100px}
.tables{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start} table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #d7dce3;padding:3px 8px;text-align:left} th{background:#eef1f5} td.n{text-align:right}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #d7dce3;border-radius:6px;padding:8px;width:max-content}
.imgs{display:flex;gap:4px} figure{margin:0;text-align:center} figcaption{font-size:11px;color:#4a5568}
img{width:112px;height:112px;image-rendering:pixelated;display:block;border-radius:2px}
.nn img{width:84px;height:84px;margin-top:28px} .none{width:112px;height:112px;background:#e9edf2;color:#718096;
display:flex;align-items:center;justify-content:center;font-size:11px;text-align:center}
.id{font-weight:600;font-size:13px;margin-top:6px} .sub{font-size:12px;color:#4a5568}
.scores{display:flex;gap:6px;flex-wrap:wrap;margin-top:4px}
.b{font-size:12px;padding:1px 6px;border-radius:10px;background:#e6f4ea;color:#1e5631}
.b.bad{background:#fde8e8;color:#9b1c1c;font-weight:600} .b.info{background:#e9edf2;color:#2d3748}
.tag{font-size:12px;color:#fff;background:#2b6cb0;border-radius:3px;padding:1px 6px;margin-left:8px;vertical-align:middle}
"""


def png_data_uri(rgb: np.ndarray | None) -> str | None:
    if rgb is None:
        return None
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _figure(uri: str | None, caption: str, missing: str, cls: str = "") -> str:
    body = f'<img src="{uri}" alt="{_e(caption)}">' if uri else f'<div class="none">{_e(missing)}</div>'
    return f'<figure class="{cls}">{body}<figcaption>{_e(caption)}</figcaption></figure>'


def _fmt(v, digits=3) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _short(frame_id: str) -> str:
    """``fog-val-b00-00003`` -> ``real val 00003``: the neighbour's split and number fit under a thumbnail."""
    parts = str(frame_id).split("-")
    return f"real {parts[1]} {parts[-1]}" if len(parts) >= 3 else f"real {frame_id}"


def card(c: dict) -> str:
    """One frame: ``c`` has frame_id, sequence, capture, images (source, generated, neighbours: list of
    (uri, id)), label_fidelity, realism_ratio, hits, seen, flags (failed gate names), model_key."""
    imgs = [_figure(c.get("source"), "source (clear)", "source frame not in this run"),
            _figure(c.get("generated"), "generated", "not generated in this run")]
    for uri, nid in c.get("neighbours", []):
        imgs.append(_figure(uri, _short(nid), "real frame not in this run", "nn"))
    fid_bad = "fidelity" in c.get("flags", ())
    real_bad = "realism" in c.get("flags", ())
    badges = [f'<span class="b{" bad" if fid_bad else ""}">fidelity {_fmt(c.get("label_fidelity"))}</span>',
              f'<span class="b{" bad" if real_bad else ""}">realism ×{_fmt(c.get("realism_ratio"), 2)}</span>',
              f'<span class="b info">hard in {c["hits"]} of {c["seen"]} evaluations</span>']
    badges += [f'<span class="b bad">{_e(f)}</span>' for f in c.get("flags", ()) if f not in ("fidelity", "realism")]
    return (f'<div class="card"><div class="imgs">{"".join(imgs)}</div>'
            f'<div class="id">{_e(c["frame_id"])}</div>'
            f'<div class="sub">drive {_e(c.get("sequence", "?"))} · {_e(c.get("capture", "?"))} · '
            f'scored by {_e(c.get("model_key", "?"))}</div><div class="scores">{"".join(badges)}</div></div>')


def _table(title: str, rows: list[dict], limit: int = 8) -> str:
    body = "".join(f'<tr><td>{_e(r["value"])}</td><td class="n">{r["n_hard"]}</td><td class="n">{r["n_scored"]}</td>'
                   f'<td class="n">{r["hard_rate"]:.0%}</td><td class="n">{_fmt(r["lift"], 1)}</td></tr>'
                   for r in rows[:limit])
    more = f'<tr><td colspan="5">… {len(rows) - limit} more</td></tr>' if len(rows) > limit else ""
    return (f'<table><tr><th>{_e(title)}</th><th>hard</th><th>scored</th><th>rate</th><th>lift</th></tr>'
            f"{body or '<tr><td colspan=5>none</td></tr>'}{more}</table>")


def render(*, condition: str, sha: str, header: list[str], groups: dict[str, list[dict]],
           sections: list[dict], shown: int, total: int) -> str:
    """The page. ``sections``: [{"title", "oversampled": bool, "n_hard", "n_scored", "cards": [card dicts]}]."""
    titles = {"group": "classes | brightness", "dominant_classes": "dominant classes", "brightness_bucket": "brightness",
              "time_bucket": "capture week", "sequence": "drive"}
    tables = "".join(_table(titles.get(dim, dim), rows) for dim, rows in groups.items())
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Hard frames · {_e(condition)}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>Hard frames · {_e(condition)}</h1>",
             *[f'<p class="meta">{line}</p>' for line in header],
             f'<p class="meta">hard set <code>{_e(sha)}</code> · showing {shown} of {total} frames</p>',
             '<div class="legend"><b>How to read a card.</b> Left to right: the clear <b>source</b> frame, the frame '
             f"<b>generated</b> from it by this run's challenger (exactly as scored), and its nearest <b>real "
             f"{_e(condition)}</b> frames in the judge's feature space. <b>fidelity</b>: the judge's mIoU on the "
             "generated frame against the source labels (higher is better). <b>realism ×</b>: distance to the "
             "nearest real frames over the typical distance between real frames (about 1 looks real; higher looks "
             "less real). Red: a failed per-frame gate. <b>lift</b>: how much more often than average a group's "
             "frames are hard; groups marked <span class=tag>oversampled</span> are drawn more often by training "
             "when hard_frame_weight &gt; 0.</div>",
             f'<div class="tables">{tables}</div>']
    for s in sections:
        tag = '<span class="tag">oversampled</span>' if s.get("oversampled") else ""
        parts.append(f'<h2>{_e(s["title"])} — {s["n_hard"]} hard of {s["n_scored"]} scored{tag}</h2>'
                     f'<div class="grid">{"".join(card(c) for c in s["cards"])}</div>')
    if not sections:
        parts.append("<h2>No hard frames yet</h2><p>No frame was in the worst fraction often enough; the set is "
                     "empty until more evaluations exist.</p>")
    parts.append("</body></html>\n")
    return "".join(parts)
