"""Drawing the champion-history PNG (matplotlib, headless) from history points and audit entries.

Three panels share a time axis: KID and class-wise gap (lower is better) and label fidelity (higher
is better). Each evaluation shows the champion it measured (blue circles, joined by a line), the
challenger (orange squares) and a rollback check's re-evaluated target (green diamonds), each with
its 95 % interval and version label. Vertical lines mark the audit log's moves: promotions (solid
green), rollbacks (dashed red), moves found outside Argus (dotted grey); a dotted purple line marks a
change of judge, across which the values are not comparable.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta

STYLE = {"champion": ("tab:blue", "o", "champion"), "challenger": ("tab:orange", "s", "challenger"),
         "rollback_target": ("tab:green", "D", "rollback target (re-checked)")}
MOVES = {"promotion": ("tab:green", "-", "promotion"), "rollback": ("tab:red", "--", "rollback"),
         "judge": ("tab:green", "-", "judge change"), "observed": ("0.5", ":", "moved outside Argus")}
PANELS = (("kid", "KID\n(lower is better)"), ("classwise_gap", "class-wise gap\n(lower is better)"),
          ("label_preservation", "label fidelity\n(higher is better)"))


def _time(text) -> datetime | None:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return None


def render(model: str, condition: str, points: list[dict], entries: list[dict], current: str | None) -> bytes:
    """The PNG bytes of the history plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True, dpi=100)
    times = []
    stamps = [t for t in (_time(p.get("at")) for p in points) if t is not None]
    span = (max(stamps) - min(stamps)) if len(stamps) > 1 else timedelta(hours=6)
    dodge = {"champion": -span * 0.012, "challenger": span * 0.012}  # one run's two models side by side
    for ax, (metric, label) in zip(axes, PANELS, strict=True):
        seen_roles = set()
        champ_line = []
        for p in points:
            t = _time(p.get("at"))
            if t is None:
                continue
            times.append(t)
            for m in p.get("models", []):
                iv = (m.get("intervals") or {}).get(metric) or {}
                y = iv.get("point")
                if y is None:
                    continue
                color, marker, name = STYLE.get(m.get("role"), ("k", "x", m.get("role")))
                t_m = t + dodge.get(m.get("role"), timedelta(0))
                lo, hi = iv.get("lo"), iv.get("hi")
                err = [[y - lo], [hi - y]] if lo is not None and hi is not None else None
                ax.errorbar([t_m], [y], yerr=err, fmt=marker, color=color, capsize=3, ms=6,
                            label=None if m.get("role") in seen_roles else name)
                seen_roles.add(m.get("role"))
                ax.annotate(f"v{m.get('version')}", (t_m, y), textcoords="offset points",
                            xytext=(-14 if m.get("role") == "champion" else 5, 4), fontsize=7, color=color)
                if m.get("role") == "champion":
                    champ_line.append((t_m, y))
        if champ_line:
            ax.plot(*zip(*champ_line, strict=True), color="tab:blue", lw=0.8, alpha=0.6)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
    moved = [e for e in entries if e.get("state") in ("committed", "observed") and _time(e.get("when"))]
    drawn = set()
    for e in moved:
        t = _time(e["when"])
        times.append(t)
        color, style, name = MOVES.get(e.get("kind"), MOVES["observed"])
        if e.get("state") == "observed":
            color, style, name = MOVES["observed"]
        for ax in axes:
            ax.axvline(t, color=color, ls=style, lw=1.2, alpha=0.8, label=None if name in drawn else name)
            drawn.add(name)
        arrow = "\u21a9" if e.get("kind") == "rollback" else "\u2191"
        start = f"v{e['from']}" if e.get("from") else "new"
        axes[0].annotate(f"{arrow} {start}\u2192v{e.get('to')}", (t, 1.0), xycoords=("data", "axes fraction"),
                         xytext=(0, 3), textcoords="offset points", fontsize=7, color=color, rotation=90,
                         ha="center", va="bottom")
    judge_prev, t_prev = None, None
    for p in points:
        judge = (p.get("judge") or {}).get("version")
        t = _time(p.get("at"))
        if judge_prev is not None and judge is not None and judge != judge_prev and t is not None:
            where = t_prev + (t - t_prev) / 2 if t_prev is not None else t  # between the last old and first new
            for ax in axes:
                ax.axvline(where, color="tab:purple", ls=":", lw=1.5,
                           label=None if "judge" in drawn else "new judge (not comparable across)")
                drawn.add("judge")
            axes[-1].annotate(f"judge v{judge}", (where, 0.0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                              textcoords="offset points", fontsize=7, color="tab:purple")
        if judge is not None:
            judge_prev, t_prev = judge, t
    if times:
        lo, hi = min(times), max(times)
        pad = max((hi - lo) * 0.05, timedelta(minutes=30))
        axes[-1].set_xlim(lo - pad, hi + pad)
    else:
        axes[1].text(0.5, 0.5, "no evaluation or alias move recorded yet", transform=axes[1].transAxes,
                     ha="center", va="center", fontsize=11, color="0.4")
    fig.autofmt_xdate()
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    n_rb = sum(e.get("kind") == "rollback" for e in moved)
    n_pr = sum(e.get("kind") == "promotion" for e in moved)
    fig.suptitle(f"{model} ({condition}): champion history, champion now "
                 f"{'v' + current if current else 'none'}; {n_pr} promotion(s), {n_rb} rollback(s)\n"
                 "bars: 95% interval, cluster bootstrap over drives; values judged by different judges are not "
                 "comparable", fontsize=10, y=0.995)
    fig.tight_layout(rect=(0, 0.05, 1, 0.91))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
