"""The report's Selection section: the report.html ``benchbone select`` writes beside select.json, ``benchbone
report SEL`` and ``benchbone report RUN SEL``, and bad input; on one real selection of tests/test_select.py's
tiny candidates (and a page in a real headless Chromium where it is installed)."""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pytest
from test_report import REPO, assert_self_contained, browser, make_record  # noqa: F401 (browser: Chromium's fixture)
from test_select import BASE, CANDIDATES

from benchbone.cli import main
from benchbone.records import write_record
from benchbone.reporting.select_report import estimator_panels


@pytest.fixture(scope="module")
def sel(tmp_path_factory) -> Path:
    """A select output directory: a chosen candidate, survivors, one screened out and one that fails to build."""
    root = tmp_path_factory.mktemp("select-report")
    args = [*BASE, *CANDIDATES, "-b", "pixels:16", "-b", "test/broken", "--keep", "2", "--epsilon", "5",
            "--budget", "1h", "--cache-dir", root / "cache", "--out", root / "sel"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCHBONE_LOAD_PLUGINS", "")
        assert main([str(a) for a in args]) == 0
    return root / "sel"


def check_selection_page(text: str, data: dict) -> None:
    """The page holds the Selection section of ``data``: statement, chosen, every candidate's row, rounds, plots."""
    assert_self_contained(text)
    assert text.count('<section class="selection"') == 1
    text = text[text.index('<section class="selection"'):text.index("</section>")]
    assert html.escape(data["statement"]) in text
    assert f"<dt>chosen</dt><dd><b>{html.escape(data['chosen'])}</b>" in text
    assert f"<dt>guarantee</dt><dd>{'yes' if data['guaranteed'] else 'no'}: " in text
    rows = {label: cls for cls, label in re.findall(r'<tr class="([^"]*)" data-candidate="([^"]+)">', text)}
    assert rows.keys() == data["candidates"].keys()
    assert {data["chosen"]: "leader", "test/broken": "failed", "pixels:16": "dropped"}.items() <= rows.items()
    assert "weights file is damaged" in text.split('data-candidate="test/broken"')[1].split("</tr>")[0]
    assert text.count('<table class="sortable candidates"') == 1
    rounds = text.split('<table class="rounds">')[1].split("</table>")[0]
    assert rounds.count("<tr>") == len(data["rounds"]) + 1
    cells = re.findall(r"<tr><td class=n>\d+</td><td class=n>[\d,]+</td><td class=n>([\d,]+)</td><td class=n>\d+</td>"
                       r"<td class=n>([\d.e+-]+)</td>", rounds)
    assert [int(items.replace(",", "")) for items, _ in cells] == [r["validation_items"] for r in data["rounds"]]
    margins = [float(margin) for _, margin in cells]
    assert margins == [float(format(r["margin"], ".2g")) for r in data["rounds"]]
    assert f"margin {data['margin']:g} points at the first size, tapered (gamma {data['taper']:g})" in text
    panels = [p for p in estimator_panels(data) if p[2]]
    assert text.count('<svg class="plot"') == len(panels) + 1 and '<polyline class="steps"' in text
    assert re.search(r"logme \(screen\): weighted τ (-?\d\.\d\d|n/a)</figcaption>", text)


@pytest.mark.slow
def test_select_writes_its_report_and_report_renders_a_select_dir_the_same(sel, cli, tmp_path):
    text = (sel / "report.html").read_text(encoding="utf-8")
    data = json.loads((sel / "select.json").read_text())
    check_selection_page(text, data)
    assert "<title>benchbone select</title>" in text and "<h2>Leaderboard</h2>" not in text
    result = cli("report", sel, "-o", tmp_path / "again.html")
    assert result.code == 0, result.err
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == text


@pytest.mark.slow
def test_report_of_a_run_and_a_select_dir(sel, cli, tmp_path):
    run = tmp_path / "run"
    write_record(run, make_record("a", "blobs", "knn", 0, 0.9, 0.1))
    result = cli("report", run, sel)
    assert result.code == 0, result.err
    text = (run / "report.html").read_text(encoding="utf-8")
    check_selection_page(text, json.loads((sel / "select.json").read_text()))
    assert "<title>benchbone leaderboard</title>" in text and '<table id="board" class="sortable">' in text
    assert text.index("<h2>Leaderboard</h2>") < text.index('<section class="selection"') < text.index("<h2>Cells</h2>")


@pytest.mark.slow
@pytest.mark.parametrize("damage", [lambda t: t[: len(t) // 2], lambda t: "[]", lambda t: t.replace('"rounds"', '"r"'),
                                    lambda t: re.sub(r'"spent_s": [0-9.]+', '"spent_s": "soon"', t)],
                         ids=["truncated", "not-an-object", "no-rounds", "wrong-type"])
def test_a_damaged_select_json_is_one_line_naming_it_and_exit_2(sel, cli, tmp_path, damage):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "select.json").write_text(damage((sel / "select.json").read_text()))
    result = cli("report", tmp_path / "bad")
    assert result.code == 2
    assert result.err.count("\n") == 1 and str(tmp_path / "bad" / "select.json") in result.err, result.err
    assert "damaged" in result.err and "Traceback" not in result.err


def test_a_directory_with_neither_records_nor_select_json_is_the_one_line_error(cli, tmp_path):
    result = cli("report", tmp_path)
    assert result.code == 2 and result.err == f"benchbone: error: {tmp_path} holds no records (no {tmp_path}/records/" \
                                              "*.json); pass a run directory\n"


@pytest.mark.slow
def test_a_report_that_fails_is_one_line_and_select_json_is_kept(sel, tmp_path, monkeypatch):
    from benchbone.reporting import report
    from benchbone.selection.output import SelectResult

    def fails(*args, **kwargs):
        raise RuntimeError("no room")

    monkeypatch.setattr(report, "write", fails)
    data = json.loads((sel / "select.json").read_text())
    said = []
    SelectResult(data).write(tmp_path, lambda line, important=False: said.append(line))
    assert said == ["benchbone: report.html not written (RuntimeError: no room); select.json is complete"]
    assert json.loads((tmp_path / "select.json").read_text()) == data and (tmp_path / "select.png").is_file()


@pytest.mark.browser
@pytest.mark.slow
def test_the_select_page_sorts_and_has_no_script_errors_in_chromium(sel, browser):  # noqa: F811 (the fixture)
    browser.get((sel / "report.html").as_uri())
    table = browser.find_element("css selector", "table.candidates")
    heads = table.find_elements("css selector", "thead th")

    def column(name: str) -> list[str]:
        index = [th.text.split(" ")[0] for th in heads].index(name)
        return [tr.find_elements("tag name", "td")[index].text for tr in table.find_elements("css selector", "tbody tr")]

    assert column("status")[0] == "chosen"
    next(th for th in heads if th.text.startswith("candidate")).click()
    assert column("candidate") == ["pixels:4", "pixels:8", "pixels:16", "test/broken", "test/tiny-cnn"]  # naturally
    next(th for th in heads if th.text.startswith("val")).click()  # best first, missing last
    values = column("val")
    assert values[-1] == "-" and [float(v) for v in values if v != "-"] == sorted(
        (float(v) for v in values if v != "-"), reverse=True)
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    artefacts = Path(os.environ.get("BENCHBONE_TEST_ARTEFACTS") or REPO / "test-artefacts")
    artefacts.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1400, browser.execute_script("return document.documentElement.scrollHeight") + 120)
    assert browser.save_screenshot(str(artefacts / "select-report.png"))
    browser.set_window_size(1400, 1800)
