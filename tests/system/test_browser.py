"""The web UI as a person uses it, in headless Chromium: trigger form, human approval, rejection.

Two runs of one condition go through at once: R1 is triggered from the form (another condition and
another number of steps than the defaults, approval required) and approved in the UI; R2, of the
same condition on another interval, is rejected in the UI. Screenshots land in ``test-artifacts/system``.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from urllib.parse import unquote

import pytest

from .browser import launch, login
from .evidence import alias_version, mlflow_runs, read_json, step_result
from .procs import wait_until
from .stack import DAG_ID

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(2400)]

CONDITION = "rain"
MODEL = f"argus-weather-{CONDITION}"
UI_STEPS = 30
R2_CONF = {"conditions": [CONDITION], "train_steps": UI_STEPS, "require_approval": True}
RUN_TIMEOUT_S = float(os.environ.get("ARGUS_TEST_RUN_TIMEOUT_S", "1500"))


@pytest.fixture(scope="module")
def page(stack):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch(pw)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        login(page, stack.base_url, "admin", stack.password, f"/dags/{DAG_ID}")
        yield page
        browser.close()


def fill_trigger_form(page, artifacts):
    """Open the trigger form and set: rain instead of the default night, UI_STEPS steps, approval required."""
    page.goto(page.url.split("/dags")[0] + f"/dags/{DAG_ID}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    conditions = dialog.get_by_role("group").filter(has_text="Weather conditions").first
    assert "Night" in conditions.inner_text(), "the form should show the deployment's default condition"
    conditions.get_by_role("button").first.click()  # the x on the "Night" tag
    conditions.get_by_role("combobox").click()
    page.get_by_role("option", name="Rain", exact=True).click()
    dialog.get_by_role("heading", name=f"Trigger Dag - {DAG_ID}").click()  # closes the option list
    steps = dialog.get_by_role("spinbutton", name="Training steps")
    steps.fill(str(UI_STEPS))
    approval = dialog.locator('[id="switch:element_require_approval"]')
    approval.click()
    assert approval.get_attribute("data-state") == "checked"
    assert "Rain" in conditions.inner_text() and "Night" not in conditions.inner_text()
    page.set_viewport_size({"width": 1400, "height": 2600})  # the whole form in one screenshot
    page.screenshot(path=str(artifacts / "ui-trigger-form.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})
    return dialog


def respond_in_ui(page, base_url: str, run_id: str, option: str, artifacts, shot: str) -> None:
    page.goto(f"{base_url}/dags/{DAG_ID}/runs/{run_id}/tasks/approve/mapped/0/required_actions")
    button = page.get_by_role("button", name=option, exact=True)
    button.wait_for()
    body = page.get_by_text("challenger v")
    body.first.wait_for()
    page.screenshot(path=str(artifacts / shot), full_page=True)
    button.click()
    page.get_by_text("Response received").first.wait_for()


@pytest.fixture(scope="module")
def ui_runs(stack, api, page, artifacts):
    dialog = fill_trigger_form(page, artifacts)
    dialog.get_by_role("button", name="Trigger").last.click()
    page.wait_for_url(f"**/dags/{DAG_ID}/runs/**")  # the UI opens the new run
    r1 = unquote(page.url.split("/runs/", 1)[1].split("/")[0].split("?")[0])
    assert api.run(DAG_ID, r1)["run_type"] == "manual"
    start, end = stack.schedule.interval(4)  # the second run: same condition, another interval
    r2 = api.trigger(DAG_ID, R2_CONF, logical_date=start + timedelta(minutes=2), data_interval=(start, end),
                     note="to be rejected")["dag_run_id"]

    def awaiting(run_id):
        return api.states(DAG_ID, run_id).get(f"approve[{CONDITION}]") == "awaiting_input"

    def pause_reported(run_id):
        # Airflow 3.3 marks the task failed when an answer re-queues it before the executor has reported
        # the exit of the process that paused it ("finished with state success, but ... queued"): a person
        # takes longer than that; a test must wait for it
        key = f"task_id='approve', run_id='{run_id}', try_number=1"
        text = (stack.logs / "scheduler.log").read_text(errors="replace")
        return any("Received executor event" in line and key in line for line in text.splitlines())

    for run_id in (r1, r2):
        wait_until(lambda run_id=run_id: awaiting(run_id) or api.run(DAG_ID, run_id)["state"] == "failed",
                   RUN_TIMEOUT_S, interval_s=3, what=f"{run_id} to wait at approve")
        assert awaiting(run_id), f"{run_id} did not reach approve: {api.states(DAG_ID, run_id)}"
        wait_until(lambda run_id=run_id: pause_reported(run_id), 120, interval_s=1,
                   what=f"the executor to report the pause of {run_id}'s approve")
    waiting_since = time.time()
    respond_in_ui(page, stack.base_url, r1, "Approve", artifacts, "ui-approval-request.png")
    respond_in_ui(page, stack.base_url, r2, "Reject", artifacts, "ui-rejection.png")
    runs = {r: api.wait_run(DAG_ID, r, RUN_TIMEOUT_S) for r in (r1, r2)}
    page.goto(f"{stack.base_url}/dags/{DAG_ID}/runs/{r1}")
    page.get_by_text("Success").first.wait_for()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(artifacts / "ui-finished-run.png"), full_page=True)
    return {"r1": r1, "r2": r2, "runs": runs, "waited_s": time.time() - waiting_since}


def test_the_form_run_succeeds_with_the_params_set_in_the_form(ui_runs, api, stack):
    r1 = ui_runs["r1"]
    assert ui_runs["runs"][r1]["state"] == "success", api.states(DAG_ID, r1)
    conf = api.run(DAG_ID, r1)["conf"]
    assert conf["conditions"] == [CONDITION] and conf["train_steps"] == UI_STEPS and conf["require_approval"] is True
    states = api.states(DAG_ID, r1)
    assert f"train[{CONDITION}]" in states and "train[night]" not in states, states


def test_the_params_reached_the_steps_in_mlflow(ui_runs, stack):
    (train,) = mlflow_runs(stack, ui_runs["r1"], "train", CONDITION)
    assert train.data.params["cfg.steps"] == str(UI_STEPS)
    assert train.data.params["condition"] == CONDITION
    (evaluate,) = mlflow_runs(stack, ui_runs["r1"], "evaluate", CONDITION)
    assert evaluate.info.status == "FINISHED"


def test_approval_in_the_ui_is_recorded_and_lets_the_policy_decide(ui_runs, stack):
    decision = read_json(stack.run_dir(ui_runs["r1"]) / "promote" / CONDITION / "decision.json")["result"]
    assert decision["approval"] == "approved", decision
    assert any("approved by admin" in r for r in decision["reasons"]), decision["reasons"]
    if decision["promoted"]:
        assert alias_version(stack, MODEL, "champion") == decision["challenger_version"]


def test_a_rejection_in_the_ui_promotes_nothing_and_the_report_says_so(ui_runs, stack, api):
    r2 = ui_runs["r2"]
    assert ui_runs["runs"][r2]["state"] == "success", api.states(DAG_ID, r2)
    decision = read_json(stack.run_dir(r2) / "promote" / CONDITION / "decision.json")["result"]
    r2_version = step_result(stack, r2, f"train/{CONDITION}")["model_version"]
    assert decision["promoted"] is False
    assert decision["approval"] == "rejected", f"the human's answer is not in the decision record: {decision}"
    assert alias_version(stack, MODEL, "champion") != r2_version
    report = (stack.run_dir(r2) / "report" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith(f"| {CONDITION} |"))
    assert "not promoted" in row, row
    assert "rejected" in report, report


def test_screenshots_were_taken(ui_runs, artifacts):
    for name in ("ui-trigger-form.png", "ui-approval-request.png", "ui-rejection.png", "ui-finished-run.png"):
        assert (artifacts / name).stat().st_size > 10_000, name
