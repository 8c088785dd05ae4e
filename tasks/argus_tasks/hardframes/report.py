"""The hard-frame lines of the training report: per condition, the set, its top groups and the gallery link."""

from __future__ import annotations

from argus_tasks.run_outcome import step_outcome


def report_lines(run, conditions: list[str]) -> list[str]:
    lines = ["", "## Hard frames"]
    for c in conditions:
        o = step_outcome(run, f"hard-frames/{c}")
        if o.status == "failed":
            lines.append(f"- **{c}**: hard-frames failed: {(o.error.splitlines() or ['see its log'])[0]}")
            continue
        if o.status != "succeeded":
            lines.append(f"- **{c}**: not run")
            continue
        r = o.result
        top = "; ".join(f"{g['value']} ({g['n_hard']} of {g['n_scored']})" for g in r.get("top_groups", [])[:3])
        lines.append(f"- **{c}**: hard set `{str(r.get('hard_set'))[:12]}`: {r.get('n_frames', 0)} frame(s) from "
                     f"{r.get('n_evaluations', 0)} evaluation(s){', provisional' if r.get('provisional') else ''}"
                     f"{'; top groups: ' + top if top else ''}; gallery: [{r.get('gallery')}]({r.get('gallery')})")
    return lines
