"""Optuna's dashboard as the sweep's live view: `optuna-dashboard` on a sweep's storage serves
its study (trials, validation curves, the sweep's files) on 127.0.0.1, and its page asks for
nothing from any other address."""

import sys
from pathlib import Path

import pytest

from tests.helpers import find_chromium, get_json, headless_page, serving
from tests.sweeps.grids import grid_study

pytestmark = pytest.mark.slow  # a server and a browser


def test_the_dashboard_serves_a_sweeps_study_from_this_machine_only(tmp_path):
    pytest.importorskip("optuna_dashboard")
    if find_chromium() is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    _, url, storage, study = grid_study(tmp_path, lrs=(1e-3,), seeds=(1,))
    trial = study.ask()  # as a sweep's worker: the curve by epoch, then the mean val/acc_best
    for epoch, accuracy in enumerate([0.91, 0.95, 0.97], start=1):
        trial.report(accuracy, epoch)
    study.tell(trial, 0.97)
    dashboard = [str(Path(sys.executable).parent / "optuna-dashboard"), url, "--quiet"]
    with serving(dashboard) as base:
        (served,) = get_json(f"{base}/api/studies")["study_summaries"]
        assert served["study_name"] == "grid"
        attributes = {a["key"] for a in served["user_attrs"]}
        assert {"sweep_file", "config/fast"} <= attributes  # the sweep's own files
        detail = get_json(f"{base}/api/studies/{served['study_id']}")
        finished = [t for t in detail["trials"] if t["state"] == "Complete"]
        curve = [v["value"] for v in finished[0]["intermediate_values"]]
        assert curve == pytest.approx([0.91, 0.95, 0.97])
        with headless_page(f"{base}/dashboard/studies/{served['study_id']}") as page:
            page.get_by_text("grid").first.wait_for(timeout=60_000)
            page.wait_for_load_state("networkidle")
            hosts = {request.split("/")[2] for request in page.requested if "://" in request}
        assert hosts == {base.split("/")[2]}  # 127.0.0.1:PORT
