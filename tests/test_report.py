"""The HTML report: self-contained, and sorted, filtered and read in a real headless Chromium.

Browser tests need /usr/bin/chromium and /usr/bin/chromedriver (Debian: chromium, chromium-driver; .ci/run
installs them) and skip without them. The screenshot and the page go to $BENCHBONE_TEST_ARTEFACTS,
default ``test-artefacts/`` in the repository (ignored by git).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from benchbone.records import read_records, write_record
from benchbone.reporting import leaderboard, report

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
COMMAND = "benchbone run -b a -b b -b c -b broken -d blobs -d digits -s linear-probe -s knn --seeds 2"
DIGEST = "sha256:9f86d081884c7d659a2feaa0c55ad015"
CLASSES = ["cat", "dog", "frog"]


def make_record(backbone, dataset, strategy, seed, top1, loss, status="ok", error=None):
    ok = status == "ok"
    return {
        "schema": 1, "cell_id": f"{backbone}-{dataset}-{strategy}-{seed}", "backbone": backbone, "dataset": dataset,
        "strategy": strategy, "seed": seed, "status": status, "error": error, "params": {"k": 20},
        "metrics": {"top1": top1, "loss": loss} if ok else {},
        "higher_is_better": {"top1": True, "loss": False}, "percent": {"top1": True, "loss": False},
        "command": COMMAND, "device": "cpu", "machine": "x86_64, 2 cpus", "host": "testhost",
        "versions": {"python": "3.11.7", "benchbone": "0.1.0", "torch": "2.14.1"},
        "plugins": {"backbone": {"name": "testplug", "version": "1.2"}},
        "timings": {"total_s": 2.0} if ok else {},
        "backbone_info": {"weights": f"file:{backbone}.safetensors@{DIGEST}", "params_m": {"a": 5.0, "b": 11.0}.get(backbone, 1.0),
                          "gmacs": {"a": 0.4, "b": 1.8, "c": 0.5}.get(backbone, 0.2), "num_features": 64,
                          "preprocess": {"size": [32, 32], "interpolation": "bicubic", "crop_pct": 0.875,
                                         "mean": [0.5] * 3, "std": [0.5] * 3}} if ok else {},
        "data": {"train": 86, "val": 10, "test": 48, "num_classes": 3, "val_carved": True,
                 "indices_digest": {"test": "852c80a269cfde9f"}} if ok else {},
        "ci": {"top1": [top1 - 0.02, top1 + 0.02]} if ok else {},
        "started_at": "2026-11-28T10:00:00+00:00", "finished_at": "2026-11-28T10:05:00+00:00",
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with ties, a failed cell, two datasets, two strategies and one cell's artefacts."""
    out = tmp_path_factory.mktemp("run")
    values = {"a": (0.88, 0.92), "b": (0.91, 0.92), "c": (0.50, 0.52)}  # b leads, a ties with it, c is far behind
    records = [make_record(bb, "blobs", "linear-probe", s, v[s], 1 - v[s]) for bb, v in values.items() for s in (0, 1)]
    records += [make_record(bb, "digits", "linear-probe", 0, t, 1 - t) for bb, t in (("a", 0.97), ("c", 0.80))]
    records += [make_record(bb, "blobs", "knn", 0, t, 1 - t) for bb, t in (("a", 0.85), ("b", 0.88))]
    records.append(make_record("broken", "blobs", "linear-probe", 0, None, None, "failed", "RuntimeError: CUDA out of memory"))
    cell = records[0]["cell_id"]
    folder = out / "artefacts" / cell
    folder.mkdir(parents=True)
    (folder / "confusion.csv").write_text(",cat,dog,frog\ncat,15,1,0\ndog,2,13,1\nfrog,0,1,15\n")
    (folder / "per_class.csv").write_text("class,support,accuracy\ncat,16,0.9375\ndog,16,0.8125\nfrog,16,0.9375\n")
    records[0]["artefacts"] = {"confusion_csv": f"artefacts/{cell}/confusion.csv", "per_class_csv": f"artefacts/{cell}/per_class.csv"}
    big = records[2]["cell_id"]  # b, seed 0: 25 classes, shown as colours only; per-class accuracy from the matrix
    (out / "artefacts" / big).mkdir()
    names = [f"c{i}" for i in range(25)]
    rows = [",".join([name, *("2" if i == j else "0" for j in range(25))]) for i, name in enumerate(names)]
    (out / "artefacts" / big / "confusion.csv").write_text("\n".join(["," + ",".join(names), *rows]) + "\n")
    records[2]["artefacts"] = {"confusion_csv": f"artefacts/{big}/confusion.csv"}
    for record in records:
        write_record(out, record)
    return out


def board_of(run_dir: Path):
    """The leaderboard, with ties, intervals and throughput filled in where leaderboard.build lacks them."""
    board = leaderboard.build(read_records([run_dir]))
    if "images_per_s" not in board or board["images_per_s"].isna().all():
        board["images_per_s"] = board["backbone"].map({"a": 900.0, "b": 300.0, "c": 800.0})
    if "comparable" not in board or not board["comparable"].any():  # no predictions.npz here: set the paired test's verdict
        board["tied"] = board["backbone"].isin(["a"]) & (board["dataset"] == "blobs") & (board["strategy"] == "linear-probe")
        board["comparable"] = board["status"] == "ok"
    if "top1_ci_low" not in board:
        board["top1_ci_low"], board["top1_ci_high"] = board["top1"] - 0.02, board["top1"] + 0.02
    return board


@pytest.fixture(scope="module")
def page_path(run_dir) -> Path:
    path = run_dir / "report.html"
    path.write_text(report.page(board_of(run_dir), read_records([run_dir]), [run_dir]), encoding="utf-8")
    return path


def assert_self_contained(text: str) -> None:
    """The page fetches nothing: no external src, href or action, no link, @import or url(), and a CSP."""
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"<link\b|@import|url\(", text, re.I)
    assert "default-src 'none'" in text  # the browser itself refuses any fetch


def test_page_is_self_contained(page_path):
    assert_self_contained(page_path.read_text(encoding="utf-8"))


def test_front_by_x_orders_the_pareto_front_by_x():
    points = [(1.0, 80.0), (2.0, 90.0), (3.0, 85.0), (0.5, 60.0), (2.0, 90.0)]
    assert report.front_by_x(points, x_higher_is_better=False) == [3, 0, 1, 4]
    assert report.front_by_x(points, x_higher_is_better=True) == [1, 4, 2]


def test_cli_report_and_html_format(run_dir, cli, tmp_path):
    result = cli("report", run_dir, "-o", tmp_path / "r.html")
    assert result.code == 0 and "wrote" in result.err
    assert '<table id="board" class="sortable">' in (tmp_path / "r.html").read_text(encoding="utf-8")
    result = cli("leaderboard", run_dir, "--format", "html")
    assert result.code == 0 and result.out.startswith("<!DOCTYPE html>")
    shutil.copytree(run_dir / "records", tmp_path / "copy" / "records")
    assert cli("report", tmp_path / "copy").code == 0 and (tmp_path / "copy" / "report.html").is_file()


def test_page_without_optional_data_still_renders():
    records = [make_record("a", "blobs", "knn", 0, 0.9, 0.1)]
    for key in ("ci", "backbone_info", "data"):
        del records[0][key]
    text = report.page(leaderboard.build(records), records)
    assert "a × blobs × knn, seed 0" in text and "images/s" not in text.split("<h2>Accuracy")[0]


# ------------------------------------------------------------------ in Chromium

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1800", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to check for script and CSP errors
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)  # no Selenium Manager
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, page_path):
    browser.get(page_path.as_uri())
    return browser


def css(driver, selector):
    return driver.find_elements("css selector", selector)


def visible_rows(driver) -> list[list[str]]:
    return [[td.text for td in tr.find_elements("tag name", "td")] for tr in css(driver, "#board tbody tr") if tr.is_displayed()]


def column(driver, name: str) -> list[str]:
    heads = [th.text.split(" ")[0] for th in css(driver, "#board thead th")]
    return [row[heads.index(name)] for row in visible_rows(driver)]


def header(driver, name: str):
    return next(th for th in css(driver, "#board thead th") if th.text.split(" ")[0] == name)


@pytest.mark.browser
def test_sorting_by_clicking_headers(page):
    assert len(visible_rows(page)) == 8
    header(page, "top1").click()  # higher is better: best first
    assert header(page, "top1").get_attribute("aria-sort") == "descending"
    top1 = column(page, "top1")
    assert top1[0].startswith("97.00") and top1[-1] == "-"  # the failed cell has no value and goes last
    means = [float(v.split(" ")[0]) for v in top1 if v != "-"]
    assert means == sorted(means, reverse=True)
    header(page, "top1").click()
    assert header(page, "top1").get_attribute("aria-sort") == "ascending"
    assert column(page, "top1")[0].startswith("51.00 ± 1.41") and column(page, "top1")[-1] == "-"
    header(page, "loss").click()  # lower is better: smallest first
    assert header(page, "loss").get_attribute("aria-sort") == "ascending"
    assert column(page, "loss")[0].startswith("0.0300")
    header(page, "backbone").click()
    assert column(page, "backbone") == sorted(column(page, "backbone"))


@pytest.mark.browser
def test_filtering_by_selects_and_search(page):
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "filter-backbone")).select_by_visible_text("a")
    assert set(column(page, "backbone")) == {"a"} and len(visible_rows(page)) == 3
    Select(page.find_element("id", "filter-dataset")).select_by_visible_text("digits")
    assert visible_rows(page) and set(column(page, "dataset")) == {"digits"}
    assert page.find_element("id", "shown").text == "1 of 8 rows"
    Select(page.find_element("id", "filter-backbone")).select_by_visible_text("all")
    Select(page.find_element("id", "filter-dataset")).select_by_visible_text("all")
    Select(page.find_element("id", "filter-strategy")).select_by_visible_text("knn")
    assert set(column(page, "strategy")) == {"knn"} and len(visible_rows(page)) == 2
    Select(page.find_element("id", "filter-strategy")).select_by_visible_text("all")
    page.find_element("id", "search").send_keys("brok")
    assert column(page, "backbone") == ["broken"]


@pytest.mark.browser
def test_failed_cells_ties_and_intervals_are_shown(page):
    failed = css(page, "#board tr.failed")
    assert len(failed) == 1 and "failed: RuntimeError: CUDA out of memory" in failed[0].text
    rows = css(page, "#board tbody tr[data-dataset=blobs][data-strategy=linear-probe]")
    assert [r.get_attribute("data-backbone") for r in rows if "≈ leader" in r.text] == ["a"]  # tied with b, c is not
    assert re.search(r"90\.00 ± 2\.83 \[\d+\.\d\d, \d+\.\d\d\]", rows[1].text)  # a's confidence interval
    assert "↑" in header(page, "top1").text and "↓" in header(page, "loss").text
    assert "lower is better" in header(page, "loss").get_attribute("title")


@pytest.mark.browser
def test_plots_and_pivot(page):
    plots = css(page, "svg.plot")
    assert len(plots) == 6  # per dataset x strategy: against GMACs, against images/s
    for plot in plots[2:4]:  # blobs x linear-probe: c is costlier and slower than a, and less accurate
        names = {c.find_element("tag name", "title").get_attribute("textContent").split(":")[0]: c.get_attribute("class")
                 for c in css(plot, "circle")}
        assert names == {"a": "point on-front", "b": "point on-front", "c": "point"}
        assert len(css(plot, "polyline.front")) == 1
    assert "images/s" in page.find_elements("css selector", "figcaption")[3].text
    pivot = page.find_element("id", "pivot").text
    assert "digits" in pivot and "97.00" in pivot and "failed" in pivot


@pytest.mark.browser
def test_provenance_is_shown(page):
    text = page.find_element("id", "provenance").text
    for expected in (COMMAND, "cpu on x86_64, 2 cpus (testhost)", "2026-11-28T10:00:00+00:00", "torch 2.14.1",
                     DIGEST, "testplug 1.2", "bicubic"):
        assert expected in text
    splits = page.find_element("id", "splits").text
    assert "blobs 0, 1 3 86 10 (carved) 48" in splits  # seeds 0 and 1 drew the same images


@pytest.mark.browser
def test_confusion_matrix_and_screenshot(page, page_path):
    from selenium.webdriver.support.ui import Select

    view = page.find_element("id", "cell-view")
    assert "a × blobs × linear-probe, seed 0" in view.text
    rows = [[c.text for c in tr.find_elements("css selector", "th,td")] for tr in css(page, "#confusion tr")]
    assert rows[0] == ["", *CLASSES] and rows[2] == ["dog", "2", "13", "1"]
    assert "dog 16 81.25" in page.find_element("id", "per-class").text
    artefacts = Path(os.environ.get("BENCHBONE_TEST_ARTEFACTS") or REPO / "test-artefacts")
    artefacts.mkdir(parents=True, exist_ok=True)
    page.set_window_size(1400, page.execute_script("return document.documentElement.scrollHeight") + 120)
    assert page.save_screenshot(str(artefacts / "report.png"))  # the whole page
    page.set_window_size(1400, 1800)
    shutil.copy(page_path, artefacts / "report.html")

    Select(page.find_element("id", "cell-select")).select_by_visible_text("broken × blobs × linear-probe, seed 0 (failed)")
    assert "CUDA out of memory" in view.text and not css(page, "#confusion")
    row = next(tr for tr in css(page, "#board tbody tr") if tr.get_attribute("data-backbone") == "c")
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(page).double_click(row).perform()
    assert view.text.startswith("c × blobs")
    assert json.loads(row.get_attribute("data-key"))[2] == "c"


@pytest.mark.browser
def test_big_confusion_matrix_and_no_console_errors(page):
    from selenium.webdriver.support.ui import Select

    Select(page.find_element("id", "cell-select")).select_by_visible_text("b × blobs × linear-probe, seed 0")
    assert len(css(page, "#confusion.big td")) == 25 * 25
    assert "c24 2 100.00" in page.find_element("id", "per-class").text
    for th in css(page, "#board thead th"):
        th.click()
    assert not [e for e in page.get_log("browser") if e["level"] == "SEVERE"]


def test_params_column_shows_only_what_differs():
    records = [make_record("a", "blobs", "knn", 0, 0.9, 0.1), make_record("b", "blobs", "knn", 0, 0.8, 0.2)]
    records[1]["params"] = {"k": 5}
    assert 'title="{&quot;k&quot;: 5}">k=5</td>' in report.page(leaderboard.build(records), records)
    assert 'class="params"' not in report.page(leaderboard.build(records[:1]), records[:1])
