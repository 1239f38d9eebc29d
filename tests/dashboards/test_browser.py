"""The HTML report and optuna-dashboard as a real browser shows them (headless Chromium).

- the report's tables fit the page (measured in the rendered page, at several window widths), and its
  per-method comparison figure is drawn;
- ``promptsweep dashboard`` on a job stored before promptsweep named objectives shows ``accuracy``
  (not "Objective 0") and each trial's adapter on that trial, downloadable; then SIGTERM stops it.
"""

from __future__ import annotations

import html
import io
import json
import re
import signal
import urllib.request
import zipfile
from pathlib import Path

import pytest

from promptsweep.dashboards import artifact_name, free_port, write_report
from promptsweep.storage import Storage
from tests.dashboards import browser
from tests.dashboards.seed import seed_job, tiny_peft_adapter
from tests.dashboards.test_launch import start_dashboard_command

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    browser.chromium_binary()  # skip (or fail, in CI) before any work when there is no Chromium
    out = tmp_path_factory.mktemp("report")
    storage = Storage(f"sqlite:///{out / 'db.sqlite'}")
    job_id = seed_job(storage)
    # A long error and a long parameter value: text that must wrap, not widen the page.
    storage.record_trial(job_id, 4, error="TrainingError: loss became nan at step 7 " + "x" * 300)
    return write_report(storage, job_id, out / "report.html")


def test_the_measure_sees_a_table_wider_than_the_page(tmp_path: Path) -> None:
    # The probe itself must be able to fail: a plain 40-column table overflows a 1024-pixel window.
    cells = "".join(f"<td>value_number_{i}</td>" for i in range(40))
    page = tmp_path / "wide.html"
    page.write_text(f"<!DOCTYPE html><html><body><table><tr>{cells}</tr></table></body></html>")
    seen = browser.measure(page, width=1024)
    assert seen["scrollWidth"] > seen["viewport"]
    assert seen["tables"][0]["right"] > seen["viewport"] and seen["wide"]


@pytest.mark.parametrize("width", [1280, 1024, 800])
def test_report_tables_fit_the_page(report: Path, width: int) -> None:
    seen = browser.measure(report, width=width)
    assert seen["viewport"] <= width and seen["viewport"] > width - 40
    assert seen["scrollWidth"] <= seen["viewport"], seen  # no horizontal scrolling of the page
    assert seen["wide"] == [], seen  # no element reaches past the window
    assert len(seen["tables"]) == 4  # leaderboard, best per method, Pareto front, stopped/failed
    for table in seen["tables"]:
        assert table["right"] <= seen["viewport"], seen
        assert table["scroll"] <= table["client"], seen  # and none scrolls inside its box either


def _plot(dom: str, element_id: str) -> str:
    start = dom.index(f'id="{element_id}"')
    end = dom.find('<div class="plot"', start + 1)
    return dom[start : end if end > 0 else len(dom)]


def test_report_draws_the_method_comparison(report: Path) -> None:
    dom = browser.dump_dom(report.as_uri(), width=1280)
    figure = _plot(dom, "method-comparison")
    assert 'class="main-svg"' in figure  # plotly drew it, offline
    ticks = [html.unescape(t) for t in re.findall(r'class="xtick"[^>]*>\s*<text[^>]*>([^<]+)</text>', figure)]
    # every variant with a validation value, with its number of complete trials
    assert ticks == ["p_tuning_lstm (1)", "p_tuning_mlp (0)", "prefix_tuning (1)", "prompt_tuning (1)"]
    assert figure.count('class="trace boxes"') == 3  # the spread of each variant's complete trials
    legend = re.findall(r'class="legendtext"[^>]*>([^<]+)</text>', figure)
    assert legend == ["best per variant (maximize)", "stopped early (last value)"]


def test_report_screenshot_is_drawn(report: Path, tmp_path: Path) -> None:
    png = browser.screenshot(report.as_uri(), tmp_path / "report.png", width=1280, height=900)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 900)


def test_dashboard_shows_metric_names_and_trial_adapters(tmp_path: Path) -> None:
    browser.chromium_binary()
    adapter = tiny_peft_adapter(tmp_path / "adapter")
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    storage = Storage(db)
    # A job stored before promptsweep named its study's objectives: the dashboard command names them.
    job_id = seed_job(storage, adapter_dirs={0: adapter, 1: adapter}, metric_names=False)
    study_id = storage.optuna_storage().get_study_id_from_name(storage.get_job(job_id).study_name)
    port = free_port()
    proc = start_dashboard_command(db, port)
    base = f"http://127.0.0.1:{port}"
    try:
        # What the page reads (its JSON API): the objective's name, each adapter on its own trial.
        with urllib.request.urlopen(f"{base}/api/studies/{study_id}?after=0", timeout=30) as resp:
            study = json.load(resp)
        assert study["objective_names"] == ["accuracy"]
        assert study["artifacts"] == []  # nothing on the study itself
        files = {t["number"]: [a["filename"] for a in t["artifacts"]] for t in study["trials"]}
        assert files == {
            0: [artifact_name(0, "prompt_tuning")],
            1: [artifact_name(1, "prefix_tuning")],
            2: [],
            3: [],
            4: [],
        }
        trial1 = next(t for t in study["trials"] if t["number"] == 1)
        url = f"{base}/artifacts/{study_id}/{trial1['trial_id']}/{trial1['artifacts'][0]['artifact_id']}"
        with urllib.request.urlopen(url, timeout=30) as resp:
            data = resp.read()
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert (
                zf.read("adapter_model.safetensors") == (adapter / "adapter_model.safetensors").read_bytes()
            )

        # What it renders: the history plot's axis is "accuracy"; trial 0's page offers its adapter.
        dom = browser.dump_dom(f"{base}/dashboard/studies/{study_id}", width=1280)
        titles = re.findall(r'<text class="ytitle"[^>]*>([^<]*)</text>', dom)
        assert "accuracy" in titles and "Objective 0" not in dom
        dom = browser.dump_dom(f"{base}/dashboard/studies/{study_id}/trials", width=1280)
        assert "Trial 0 (trial_id=" in dom and artifact_name(0, "prompt_tuning") in dom
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        proc.communicate()
    assert code == 128 + signal.SIGTERM
