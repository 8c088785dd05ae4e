"""The live progress lines of a local DAG run (argus_airflow.demo_progress.Watcher): pure logic."""

from __future__ import annotations

from argus_airflow.demo_progress import Task, Watcher, clock


def _t(task_id, state, start=None, end=None, idx=-1, label=None):
    return Task(task_id, idx, label, state, start, end)


def test_a_step_is_shown_once_when_it_starts_and_once_when_it_ends_with_its_outcome():
    w = Watcher()
    assert w.update([_t("pull", "running", 0.0)], 1.0) == ["  > pull                         started"]
    assert w.update([_t("pull", "running", 0.0)], 2.0) == []
    lines = w.update([_t("pull", "success", 0.0, 4.5), _t("train", "failed", 5.0, 7.0, 0, "fog")], 8.0)
    assert lines == ["  = pull                            4.5s  ok", "  x train[fog]                      2.0s  FAILED"]


def test_time_left_counts_what_did_not_end_from_the_last_successful_run():
    w = Watcher({"pull": 10.0, "train[fog]": 100.0, "report": 20.0})
    w.update([_t("pull", "running", 0.0)], 0.0)
    lines = w.update([_t("pull", "success", 0.0, 9.0), _t("train", "running", 9.0, None, 0, "fog")], 39.0)
    assert lines[0].endswith("~1:30 left")  # train: 100 s expected, 30 s done; report: 20 s
    assert lines[1].endswith("started (last run: 1:40)")


def test_training_progress_is_shown_at_most_every_ten_seconds_for_the_running_step():
    w = Watcher()
    w.update([_t("train", "running", 0.0, None, 0, "snow")], 0.0)
    line = "2026-12-02 [info] step 25/150 g_loss 1.2 | 11.5 images/s | eta 42s"
    assert w.progress(line, 100.0) == "    train[snow]: step 25/150, 11.5/s, eta 0:42"
    assert w.progress(line, 105.0) is None
    assert w.progress("segmenter epoch 2/40 step 9/130 loss 0.8 1.9 it/s eta 61s", 111.0) == \
        "    train[snow]: epoch 2/40 step 9/130, 1.9/s, eta 1:01"
    assert w.progress("an unrelated line", 200.0) is None
    assert clock(3725) == "62:05"
