"""The example third-party package in tests/plugins/benchbone-sample, installed for real and run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_subprocess

SAMPLE = Path(__file__).parent / "plugins" / "benchbone-sample"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(SAMPLE)], check=True, capture_output=True, timeout=300)
    return {"PYTHONPATH": str(target), "BENCHBONE_LOAD_PLUGINS": "1"}


@pytest.mark.slow
def test_installed_plugin_is_listed(installed):
    result = run_subprocess("plugins", env=installed)
    assert result.returncode == 0, result.stderr
    assert "sample 0.2.0: benchbone_register_backbones, benchbone_register_datasets, " \
           "benchbone_register_metrics, benchbone_register_strategies" in result.stdout
    listed = run_subprocess("list", "strategies", env=installed)
    assert "sample/nearest-centroid" in listed.stdout and "[sample]" in listed.stdout


@pytest.mark.slow
def test_installed_plugin_runs_beside_the_built_ins(installed, tmp_path):
    result = run_subprocess("run", "-b", "sample/avgpool", "-d", "sample/stripes", "-s", "sample/nearest-centroid",
                            "-s", "linear-probe", "-m", "top1", "-m", "sample/error-rate", "-q",
                            "--out", str(tmp_path / "run"), env=installed)
    assert result.returncode == 0, result.stderr
    board = {row["strategy"]: row for row in json.loads((tmp_path / "run" / "leaderboard.json").read_text())}
    assert board["sample/nearest-centroid"]["top1"] > 0.9  # stripes are easy for class means of pooled pixels
    assert board["sample/nearest-centroid"]["sample/error-rate"] == pytest.approx(
        1 - board["sample/nearest-centroid"]["top1"])
    record = json.loads(next((tmp_path / "run" / "records").glob("*.json")).read_text())
    assert record["plugins"]["backbone"] == {"name": "sample", "version": "0.2.0"}


@pytest.mark.slow
def test_without_entry_points_the_plugin_is_absent(installed):
    result = run_subprocess("list", "strategies", env={**installed, "BENCHBONE_LOAD_PLUGINS": ""})
    assert "sample/" not in result.stdout
