import json

import numpy as np
import pytest

import benchbone
from benchbone import DatasetSplits, ImageTensorDataset, Predictions, hookimpl
from benchbone.plugins import get_plugin_manager
from benchbone.testing import tiny_cnn


class Counting:
    """A plugin whose backbone counts forward passes and whose strategies count calls."""

    def __init__(self):
        self.images = 0
        self.calls = 0

    @hookimpl
    def benchbone_register_backbones(self, register):
        def build(pretrained):
            backbone = tiny_cnn(pretrained)
            backbone.model.register_forward_hook(
                lambda module, inputs, output: setattr(self, "images", self.images + len(inputs[0])))
            return backbone

        register("count/cnn", build)

    @hookimpl
    def benchbone_register_strategies(self, register):
        def centroid(backbone, data, ctx):
            import torch

            self.calls += 1
            X, y = ctx.features("train")
            centers = torch.stack([X[y == k].mean(0) for k in range(ctx.num_classes)])
            Xt, yt = ctx.features("test")
            scores = torch.softmax(-torch.cdist(Xt, centers), 1)
            return Predictions(yt, scores.argmax(1), scores)

        def broken(backbone, data, ctx):
            raise RuntimeError("strategy exploded")

        def wrong_shape(backbone, data, ctx):
            _, yt = ctx.features("test")
            return Predictions(yt, yt, np.zeros((len(yt), 2)))

        register("count/centroid", centroid)
        register("count/broken", broken)
        register("count/wrong-shape", wrong_shape)

    @hookimpl
    def benchbone_register_datasets(self, register):
        def one_class(data_dir, download):
            import torch

            images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
            return DatasetSplits(ImageTensorDataset(images, [0] * 4), ImageTensorDataset(images, [0] * 4), ["only"])

        register("count/one-class", one_class)


@pytest.fixture
def counting(benchbone_pm):
    plugin = Counting()
    benchbone_pm.register(plugin, name="counting")
    return plugin


def test_tiny_grid_writes_records_and_a_leaderboard(run_tiny_benchmark, tmp_path):
    board = run_tiny_benchmark(strategies=["linear-probe", "finetune"], overrides={"finetune.epochs": 1})
    assert list(board["strategy"]) == ["finetune", "linear-probe"]
    assert (board["status"] == "ok").all()
    probe = board[board.strategy == "linear-probe"].iloc[0]
    assert probe["top1"] > 0.5  # 4 learnable classes: chance is 0.25
    records = sorted((tmp_path / "run" / "records").glob("*.json"))
    assert len(records) == 2
    record = json.loads(records[0].read_text())
    for key in ("cell_id", "metrics", "timings", "versions", "device", "params", "data", "backbone_info", "plugins"):
        assert key in record
    assert record["data"]["val"] > 0 and record["data"]["val_carved"] is True
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.json"):
        assert (tmp_path / "run" / name).exists()


def test_features_are_extracted_once_and_shared(counting, run_tiny_benchmark):
    run_tiny_benchmark(backbones=["count/cnn"], strategies=["count/centroid", "linear-probe"], seeds=2)
    assert counting.images == 96 + 48 + 1  # train and test once, one image for the GMACs count


def test_finished_cells_are_skipped_on_rerun(counting, run_tiny_benchmark, tmp_path):
    first = run_tiny_benchmark(backbones=["count/cnn"], strategies=["count/centroid"], seeds=2)
    assert counting.calls == 2
    second = run_tiny_benchmark(backbones=["count/cnn"], strategies=["count/centroid"], seeds=3)
    assert counting.calls == 3  # only seed 2 ran
    assert second.loc[0, "seeds"] == 3 and first.loc[0, "seeds"] == 2


def test_a_failing_cell_is_recorded_and_the_rest_go_on(counting, run_tiny_benchmark, tmp_path):
    board = run_tiny_benchmark(backbones=["count/cnn"], strategies=["count/broken", "count/centroid",
                                                                    "count/wrong-shape"])
    status = dict(zip(board.strategy, board.status))
    assert status == {"count/broken": "failed", "count/centroid": "ok", "count/wrong-shape": "failed"}
    errors = dict(zip(board.strategy, board.error))
    assert "RuntimeError: strategy exploded" in errors["count/broken"]
    assert "y_score of shape" in errors["count/wrong-shape"]
    # a failed cell is retried on the next run, a finished one is not
    calls = counting.calls
    run_tiny_benchmark(backbones=["count/cnn"], strategies=["count/broken", "count/centroid"])
    assert counting.calls == calls


def test_seeds_give_mean_and_std(run_tiny_benchmark):
    board = run_tiny_benchmark(strategies=["finetune"], seeds=2, overrides={"epochs": 1})
    row = board.iloc[0]
    assert row["seeds"] == 2 and not np.isnan(row["top1_std"])


def test_same_seed_same_numbers(run_tiny_benchmark, tmp_path):
    a = run_tiny_benchmark(strategies=["finetune"], overrides={"epochs": 1}, out=tmp_path / "a")
    b = run_tiny_benchmark(strategies=["finetune"], overrides={"epochs": 1}, out=tmp_path / "b",
                           cache_dir=tmp_path / "other-cache")
    assert a.loc[0, "top1"] == b.loc[0, "top1"] and a.loc[0, "f1"] == b.loc[0, "f1"]


def test_one_class_dataset_is_a_usage_error_before_anything_is_written(counting, tmp_path):
    from benchbone.errors import UsageError

    with pytest.raises(UsageError, match="1 class"):
        benchbone_run_with(counting, tmp_path)
    assert not (tmp_path / "nothing").exists()


def benchbone_run_with(plugin, tmp_path):
    from benchbone.execution.harness import run_grid
    from benchbone.planning.grid import GridSpec

    pm = get_plugin_manager(extra=["benchbone.testing"])
    pm.register(plugin, name="counting")
    return run_grid(GridSpec(["count/cnn"], ["count/one-class"], ["count/centroid"]), out=tmp_path / "nothing",
                    pm=pm, quiet=True, echo=False)


def test_python_api_returns_the_leaderboard(tmp_path):
    board = benchbone.run("test/tiny-cnn", "test/blobs", "linear-probe", metrics=["top1"],
                          plugins=["benchbone.testing"], out=tmp_path / "api", params={"c_steps": 3})
    assert list(board["backbone"]) == ["test/tiny-cnn"] and 0 <= board.loc[0, "top1"] <= 1
    assert (tmp_path / "api" / "leaderboard.md").exists()


class Nosy:
    """A backbone and a dataset whose ``info`` names harness fields, and a strategy predicting a class that is not."""

    @hookimpl
    def benchbone_register_backbones(self, register):
        def build(pretrained):
            backbone = tiny_cnn(pretrained)
            backbone.info = {"weights": "the plugin's claim", "params_m": -1.0, "input_size": 1, "library": "nosy"}
            return backbone

        register("nosy/cnn", build)

    @hookimpl
    def benchbone_register_datasets(self, register):
        from benchbone.testing import blobs

        def build(data_dir, download):
            data = blobs(data_dir, download)
            return DatasetSplits(data.train, data.test, data.classes, info={"val": 999, "test": 0, "source": "blobs"})

        register("nosy/blobs", build)

    @hookimpl
    def benchbone_register_strategies(self, register):
        def off_by_classes(backbone, data, ctx):
            _, yt = ctx.features("test")
            y_pred = yt.clone()
            y_pred[3] = ctx.num_classes  # one past the last class
            return Predictions(yt, y_pred)

        register("nosy/out-of-range", off_by_classes)


def test_plugin_info_never_overwrites_harness_fields(benchbone_pm, run_tiny_benchmark, tmp_path):
    benchbone_pm.register(Nosy(), name="nosy")
    board = run_tiny_benchmark(backbones=["nosy/cnn"], datasets=["nosy/blobs"], strategies=["knn"])
    record = json.loads(next((tmp_path / "run" / "records").glob("*.json")).read_text())
    info, data = record["backbone_info"], record["data"]
    assert info["weights"] == "tiny-seeded" and info["input_size"] == [16, 16] and info["params_m"] > 0
    assert info["plugin_info"] == {"weights": "the plugin's claim", "params_m": -1.0, "input_size": 1,
                                   "library": "nosy"}
    assert (data["val"], data["test"]) == (round(96 * 0.1), 48) and data["val_carved"] is True
    assert data["plugin_info"] == {"val": 999, "test": 0, "source": "blobs"}
    assert board.loc[0, "params_m"] == info["params_m"]  # the leaderboard reads the harness's numbers


def test_predicted_labels_outside_the_classes_are_a_plugin_error_before_metrics(benchbone_pm, run_tiny_benchmark,
                                                                                tmp_path):
    benchbone_pm.register(Nosy(), name="nosy")
    board = run_tiny_benchmark(strategies=["nosy/out-of-range"])
    assert board.loc[0, "status"] == "failed"
    record = json.loads(next((tmp_path / "run" / "records").glob("*.json")).read_text())
    assert record["error"] == ("PluginError: strategy 'nosy/out-of-range' returned y_pred with 1 label(s) outside "
                               "0..3 (e.g. 4); labels are class indices")
    assert record["metrics"] == {} and not (tmp_path / "run" / "artefacts").exists()
