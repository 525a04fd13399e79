"""The HTML report at size: 10 datasets x 3 strategies x 20 backbones x 3 seeds, read in headless Chromium at
1,400 px. No horizontal page scroll, no overlapping tick labels, loaded in under 2 s; the screenshot goes to
$BENCHBONE_TEST_ARTEFACTS (default ``test-artefacts/``) as report-20-backbones.png for a person to look at.

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian: chromium, chromium-driver) and skips without them.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from benchbone.records import content_digest, read_records, record_path
from benchbone.reporting import leaderboard, report, report_plots

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DATASETS = [f"dataset-{name}" for name in ("cifar10", "cifar100", "dtd", "eurosat", "flowers102", "food101", "pets",
                                            "resisc45", "stl10", "svhn")]
STRATEGIES = ["linear-probe", "knn", "finetune"]
BACKBONES = [f"{family}_{size}" for family in ("resnet", "convnext", "vit", "efficientnet")
             for size in ("tiny", "small", "base", "large", "huge")]
SEEDS = (0, 1, 2)
WIDTH = 1400


def record(backbone: str, dataset: str, strategy: str, seed: int, rng: np.random.Generator) -> dict:
    b, d = BACKBONES.index(backbone), DATASETS.index(dataset)
    top1 = float(np.clip(0.55 + 0.015 * b - 0.02 * d + rng.normal(0, 0.01), 0, 1))
    return {
        "schema": 1, "cell_id": f"{b:02d}{d:02d}{STRATEGIES.index(strategy)}{seed}", "backbone": backbone,
        "dataset": dataset, "strategy": strategy, "seed": seed, "status": "ok", "error": None,
        "params": {"k": 20} if strategy == "knn" else {"lr": 0.01},
        "metrics": {"top1": top1, "loss": 1 - top1, "balanced_accuracy": top1 - 0.01},
        "higher_is_better": {"top1": True, "loss": False, "balanced_accuracy": True},
        "percent": {"top1": True, "loss": False, "balanced_accuracy": True},
        "ci": {"top1": [top1 - 0.02, top1 + 0.02]},
        "command": "benchbone run --suite big", "device": "cuda:0", "machine": "x86_64, 16 cpus", "host": "node1",
        "versions": {"python": "3.11.7", "benchbone": "0.1.0", "torch": "2.14.1"},
        "plugins": {"backbone": {"name": "timm_backbones", "version": "0.1.0"}},
        "plugin_versions": {"timm_backbones": "0.1.0", "knn": "0.1.0",
                            "mlflow:/home/user/runs/mlflow.db": "0.1.0"},
        "timings": {"total_s": 10.0 + b, "features_images_per_s": 4000.0 / (1 + b)},
        "resources": {"peak_mem_mb": 500.0 + 100 * b},
        "backbone_info": {"weights": f"hf-hub:timm/{backbone}", "params_m": 3.0 * 1.25 ** b,
                          "gmacs": 0.3 * 1.3 ** b, "num_features": 512 + 64 * b,
                          "preprocess": {"size": [224, 224], "interpolation": "bicubic", "crop_pct": 0.875,
                                         "mean": [0.5] * 3, "std": [0.5] * 3}},
        "data": {"train": 1000 + 10 * d, "val": 100, "test": 500, "num_classes": 10 + d, "val_carved": True,
                 "indices_digest": {"train": f"{d:02d}{seed}train", "val": f"{d:02d}{seed}val", "test": f"{d:02d}test"}},
        "started_at": "2026-12-01T10:00:00+00:00", "finished_at": "2026-12-01T12:00:00+00:00",
    }


@pytest.fixture(scope="module")
def page_path(tmp_path_factory) -> Path:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)")
    out = tmp_path_factory.mktemp("big-run")
    rng = np.random.default_rng(0)
    (out / "records").mkdir()
    for cell in itertools.product(BACKBONES, DATASETS, STRATEGIES, SEEDS):  # as write_record writes them, unsynced
        plain = record(*cell, rng)
        plain["digest"] = content_digest(plain)
        record_path(out, plain["cell_id"]).write_text(json.dumps(plain, sort_keys=True), encoding="utf-8")
    records = read_records([out])
    assert len(records) == 20 * 10 * 3 * 3
    path = out / "report.html"
    path.write_text(report.page(leaderboard.build(records), records, [out]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--hide-scrollbars", f"--window-size={WIDTH},1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, page_path):
    """The page, loaded up to three times: the fastest load counts (a test machine is shared)."""
    browser.load_seconds = []
    for _ in range(3):
        started = time.perf_counter()
        browser.get(page_path.as_uri())  # returns once the load event has fired
        browser.load_seconds.append(time.perf_counter() - started)
        if browser.load_seconds[-1] < 1.0:
            break
    return browser


@pytest.mark.browser
def test_loads_in_under_two_seconds(page):
    navigation = page.execute_script("const n = performance.getEntriesByType('navigation')[0];"
                                     "return n.loadEventEnd - n.startTime;") / 1000
    loads = ", ".join(f"{s:.3f}" for s in page.load_seconds)
    print(f"load: {loads} s as the driver saw it; the last {navigation:.3f} s in the browser")
    assert min(page.load_seconds) < 2.0
    assert not [e for e in page.get_log("browser") if e["level"] == "SEVERE"]


@pytest.mark.browser
def test_no_horizontal_page_scroll(page):
    width, inner = page.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    print(f"scrollWidth {width} px, innerWidth {inner} px")
    assert inner <= WIDTH and width <= inner
    board = page.find_element("id", "board")  # the table is wider than the page: it scrolls in its own box
    box = page.execute_script("return arguments[0].parentElement.getBoundingClientRect().width", board)
    assert box <= inner


def _tick_boxes(page) -> list[list[dict]]:
    """Per axis of every shown plot: the rendered boxes of its tick labels."""
    return page.execute_script("""
        const axes = [];
        for (const svg of document.querySelectorAll('svg.plot')) {
          for (const axis of ['x', 'y']) {
            const boxes = [...svg.querySelectorAll('text.tick.' + axis)].map(t => t.getBoundingClientRect())
              .filter(b => b.width > 0 && b.height > 0)
              .map(b => ({left: b.left, right: b.right, top: b.top, bottom: b.bottom}));
            if (boxes.length) axes.push(boxes);
          }
        }
        return axes;""")


def _overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


def _check_ticks(page) -> int:
    axes = _tick_boxes(page)
    assert axes, "no tick labels shown"
    for boxes in axes:
        assert len(boxes) >= 2
        for a, b in itertools.combinations(boxes, 2):
            assert not _overlap(a, b), (a, b)
    return len(axes)


@pytest.mark.browser
def test_tick_labels_do_not_overlap(page):
    from selenium.webdriver.support.ui import Select

    assert _check_ticks(page)
    chooser = page.find_element("id", "plot-group")  # many datasets: one figure per question and a selector
    for option in Select(chooser).options[:: 7]:
        Select(chooser).select_by_visible_text(option.text)
        _check_ticks(page)
    Select(chooser).select_by_index(0)
    assert len([s for s in page.find_elements("css selector", "svg.plot") if s.is_displayed()]) == 2


@pytest.mark.browser
def test_columns_can_be_hidden(page):
    heads = page.find_elements("css selector", "#board thead th")
    box = page.find_element("css selector", "#columns input[data-column='gmacs']")
    shown = len([h for h in heads if h.is_displayed()])
    page.execute_script("arguments[0].closest('details').open = true", box)
    box.click()
    assert len([h for h in heads if h.is_displayed()]) == shown - 1
    index = [h.get_attribute("data-column") for h in heads].index("gmacs")
    assert not page.find_elements("css selector", "#board tbody tr:first-child td")[index].is_displayed()
    box.click()
    assert len([h for h in heads if h.is_displayed()]) == shown
    page.execute_script("arguments[0].closest('details').open = false", box)


@pytest.mark.browser
def test_splits_named_per_seed_and_loggers_apart(page):
    splits = page.find_element("id", "splits").text
    assert "seed" in splits.splitlines()[0]
    assert any(line.startswith("dataset-dtd 0 ") for line in splits.splitlines())
    provenance = page.find_element("id", "provenance")
    plugins = provenance.find_element("id", "prov-plugins").text
    loggers = provenance.find_element("id", "prov-loggers").text
    assert "mlflow" not in plugins and "timm_backbones" in plugins
    assert "mlflow:/home/user/runs/mlflow.db" in loggers


@pytest.mark.browser
def test_screenshot(page, page_path):
    artefacts = Path(os.environ.get("BENCHBONE_TEST_ARTEFACTS") or REPO / "test-artefacts")
    artefacts.mkdir(parents=True, exist_ok=True)
    height = page.execute_script("return document.documentElement.scrollHeight")
    page.set_window_size(WIDTH, min(height + 140, 16000))
    try:
        assert page.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        assert page.save_screenshot(str(artefacts / "report-20-backbones.png"))
    finally:
        page.set_window_size(WIDTH, 1000)
    shutil.copy(page_path, artefacts / "report-20-backbones.html")


def test_ticks_are_round_and_few():
    assert [text for _, text in report_plots.linear_ticks(47.8, 95.0)] == ["50", "60", "70", "80", "90"]
    assert [text for _, text in report_plots.linear_ticks(0, 4200, 7)] == ["0", "1000", "2000", "3000", "4000"]
    assert [text for _, text in report_plots.linear_ticks(-0.05, 0.03)] == ["-0.04", "-0.02", "0", "0.02"]
    assert [text for _, text in report_plots.linear_ticks(1e5, 3e5)] == ["100k", "150k", "200k", "250k", "300k"]
    assert [text for _, text in report_plots.log_ticks(-0.6, 1.7)] == ["0.5", "1", "2", "5", "10", "20", "50"]
    assert [text for _, text in report_plots.log_ticks(-2, 4)] == ["0.01", "0.1", "1", "10", "100", "1000", "10k"]
    assert len(report_plots.linear_ticks(0.392, 0.508)) >= 3


def test_many_groups_share_one_figure_per_question():
    rng = np.random.default_rng(0)
    records = [record(*cell, rng) for cell in itertools.product(BACKBONES[:3], DATASETS[:3], STRATEGIES[:2], SEEDS[:1])]
    text = report.page(leaderboard.build(records), records)
    assert text.count('<svg class="plot"') == 2 * 6 and text.count('<figure class="question">') == 2
    assert 'id="plot-group"' in text and text.count("<option value=") >= 6
    few = [r for r in records if r["dataset"] == DATASETS[0]]
    text = report.page(leaderboard.build(few), few)
    assert text.count('<svg class="plot"') == 2 * 2 and 'id="plot-group"' not in text
