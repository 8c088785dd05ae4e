"""Hard-set selection over the last N evaluations: the rule, fewer evaluations than N, ties, hardness."""

from __future__ import annotations

import numpy as np
import pytest

from argus_tasks.hardframes.selection import Evaluation, hardness, select, worst


def ev(i: int, hardness_by_frame: dict[str, float]) -> Evaluation:
    return Evaluation(key=f"dag/run{i}/evaluate", scored_at=f"2026-03-{i + 1:02d}T00:00:00Z",
                      hardness=hardness_by_frame)


def ten(worst_ids: tuple[str, ...]) -> dict[str, float]:
    """Ten frames f0..f9; the named ones get the highest hardness, in order, the rest 0.1..."""
    h = {f"f{i}": 0.05 * i for i in range(10)}
    for rank, fid in enumerate(worst_ids):
        h[fid] = 1.9 - 0.1 * rank
    return h


def test_a_frame_is_hard_when_in_the_worst_fraction_of_min_hits_of_the_last_n():
    # fraction 0.2 of 10 frames = the 2 worst of each evaluation
    history = [ev(0, ten(("f0", "f1"))), ev(1, ten(("f0", "f2"))), ev(2, ten(("f0", "f1"))), ev(3, ten(("f3", "f2")))]
    sel = select(history, last_n=3, fraction=0.2, min_hits=2)
    assert sel.evaluations == ["dag/run1/evaluate", "dag/run2/evaluate", "dag/run3/evaluate"], "oldest dropped"
    by_id = {f["frame_id"]: f for f in sel.frames}
    # last three: f0 hit in run1+run2, f2 in run1+run3, f1 only in run2, f3 only in run3
    assert set(by_id) == {"f0", "f2"}
    assert (by_id["f0"]["hits"], by_id["f0"]["seen"]) == (2, 3)
    assert sel.required_hits == 2 and not sel.provisional and sel.n_available == 4
    # over all four, f1 is hard too (run0 + run2)
    assert set(select(history, last_n=4, fraction=0.2, min_hits=2).frame_ids) == {"f0", "f1", "f2"}


def test_history_order_is_by_time_not_list_order():
    a, b, c = ev(0, ten(("f9", "f8"))), ev(1, ten(("f1", "f2"))), ev(2, ten(("f1", "f2")))
    assert select([c, a, b], last_n=2, fraction=0.2, min_hits=2).frame_ids == ["f1", "f2"]


def test_fewer_evaluations_than_n_lower_the_bar_and_say_provisional():
    one = select([ev(0, ten(("f4", "f5")))], last_n=5, fraction=0.2, min_hits=2)
    assert one.required_hits == 1 and one.provisional
    assert one.frame_ids == ["f4", "f5"], "one evaluation: its worst fraction, hardest first"
    two = select([ev(0, ten(("f4", "f5"))), ev(1, ten(("f4", "f6")))], last_n=5, fraction=0.2, min_hits=2)
    assert two.required_hits == 2 and two.provisional and two.frame_ids == ["f4"]


def test_no_history_gives_an_empty_set():
    sel = select([], last_n=5, fraction=0.2, min_hits=2)
    assert sel.frames == [] and sel.evaluations == [] and sel.provisional


def test_ties_at_the_cutoff_are_all_in_whatever_the_frame_ids():
    h = {"a": 1.0, "b": 0.5, "c": 0.5, "d": 0.5, "e": 0.1}
    assert worst(h, 0.2) == {"a"}
    assert worst(h, 0.4) == {"a", "b", "c", "d"}, "the 2nd worst ties with two more: all three are in"
    renamed = {"z": 1.0, "y": 0.5, "x": 0.5, "w": 0.5, "v": 0.1}
    assert worst(renamed, 0.4) == {"z", "y", "x", "w"}
    assert worst({f"f{i}": 0.3 for i in range(7)}, 0.1) == {f"f{i}" for i in range(7)}, "all tied: all worst"
    assert worst(h, 1.0) == set(h)


def test_results_are_sorted_hardest_first_with_a_stable_tiebreak():
    history = [ev(i, {"b": 1.0, "a": 1.0, "c": 0.9, "d": 0.0}) for i in range(2)]
    assert select(history, last_n=2, fraction=0.75, min_hits=2).frame_ids == ["a", "b", "c"]


def test_bad_settings_and_a_doubly_counted_evaluation_are_refused():
    with pytest.raises(ValueError, match="fraction"):
        worst({"a": 1.0}, 0.0)
    with pytest.raises(ValueError, match="last_n"):
        select([], last_n=0, fraction=0.2, min_hits=1)
    with pytest.raises(ValueError, match="counted once"):
        select([ev(0, {"a": 1.0}), ev(0, {"a": 0.5})], last_n=3, fraction=0.5, min_hits=1)


def test_hardness_ranks_low_fidelity_and_far_from_real_and_puts_flagged_and_unjudged_last():
    fidelity = np.array([0.9, 0.5, 0.1, 0.9, np.nan])
    realism = np.array([1.0, 1.0, 1.0, 5.0, 1.0])
    h = hardness(fidelity, realism, flagged=[False, False, False, False, True])
    assert h[2] > h[1] > h[0], "lower fidelity is harder at equal realism"
    assert h[3] > h[0], "farther from the real frames is harder at equal fidelity"
    assert h[4] == 2.0, "a frame the judge could not score is hardest"
    flagged = hardness(fidelity[:4], realism[:4], flagged=[True, False, False, False])
    assert flagged[0] > max(flagged[1:]) and 1.0 < flagged[0] <= 2.0, "a failed gate outranks every unflagged frame"
    assert np.argmax(hardness(fidelity[:4], realism[:4], score="fidelity")) == 2
    assert np.argmax(hardness(fidelity[:4], realism[:4], score="realism")) == 3
