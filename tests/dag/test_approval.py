"""The approval step: an answer, a rejection and no answer at all, as the scheduler hands them back.

``execute_complete`` is fed the very payload that Airflow 3.3 builds (``HITLDetail.as_resume_event_payload``)
when a person answers in the UI, and when the scheduler's ``awaiting_input`` sweep applies the
defaults after ``response_timeout``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from argus_airflow.approval import ConditionalApprovalOperator

WINDOW = timedelta(days=2)


def _operator():
    return ConditionalApprovalOperator(task_id="approve", condition="fog", response_timeout=WINDOW)


def _payload(chosen: str, user: dict | None, timedout: bool) -> dict:
    from airflow.models.hitl import HITLDetail

    detail = HITLDetail(options=["Approve", "Reject"], subject="s", chosen_options=[chosen], params_input={},
                        responded_at=datetime(2026, 12, 1, tzinfo=UTC), responded_by=user)
    return detail.as_resume_event_payload(timedout=timedout)


def test_no_answer_within_the_window_rejects_and_says_it_timed_out():
    op = _operator()
    assert op.defaults == ["Reject"], "the timeout sweep applies the defaults: they must reject"
    result = op.execute_complete({}, _payload("Reject", None, timedout=True))
    assert result["approved"] is False
    assert result["timed_out"] is True
    assert result["by"] == "nobody within 2 days, 0:00:00 (timed out)"


def test_a_person_who_approves_is_named():
    result = _operator().execute_complete({}, _payload("Approve", {"id": "7", "name": "ada"}, timedout=False))
    assert result == {"required": True, "approved": True, "timed_out": False, "by": "ada",
                      "at": "2026-12-01 00:00:00+00:00"}


def test_a_rejection_by_a_person_is_not_a_timeout():
    result = _operator().execute_complete({}, _payload("Reject", {"id": "7", "name": "ada"}, timedout=False))
    assert (result["approved"], result["timed_out"], result["by"]) == (False, False, "ada")


@pytest.mark.parametrize("timed_out", [True, False])
def test_promote_moves_nothing_without_a_literal_approval(timed_out):
    from argus_tasks.steps.promote import apply_approval

    approval = {"required": True, "approved": False, "timed_out": timed_out, "by": "x"}
    promote, reasons, state = apply_approval(True, ["beats champion"], approval)
    assert promote is False
    assert state == ("timed_out" if timed_out else "rejected")
    assert "nothing moves" in reasons[-1]
