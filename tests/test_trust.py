"""Trust (issue 28, items 5 and 7): a run's identity does not depend on how a path is spelled, records and
features are never served for other data, and hostile or broken input gives the right result or one line.

docs/reliability.md maps each promise to its test here.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import run_subprocess
from test_bad_inputs import BASE, image_folder, with_flags

RUN = ["run", *BASE]


def records_of(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "records").glob("*.json"))]


def feature_files(cache: Path) -> set[str]:
    return {p.name for p in (cache / "features").glob("*.safetensors")}


def plugin_file(folder: Path, body: str, name: str = "trust_plugin.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


DATASET_PLUGIN = """
import torch
from benchbone import DatasetSplits, ImageTensorDataset, hookimpl

def make(labels):
    images = torch.randint(0, 255, (len(labels), 3, 12, 12), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    return ImageTensorDataset(images, labels)

def build(data_dir, download):
    labels = {labels}
    return DatasetSplits(make(labels), make(labels), {classes})

@hookimpl
def benchbone_register_datasets(register):
    register("trust/data", build)
"""


# ------------------------------------------------------------------ 5: identity from what determines the numbers


def test_a_cells_id_and_features_do_not_depend_on_how_the_data_dir_is_spelled(cli, tmp_path):
    """test/blobs ignores --data-dir: absent, relative and absolute give one cell, one record, one feature set,
    and the id of a run without --data-dir is the one every earlier benchbone wrote."""
    from benchbone.planning.grid import GridSpec, expand
    from benchbone.plugins import get_plugin_manager

    (tmp_path / "d").mkdir()
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = cli(*RUN, "--out", out)
    assert first.code == 0, first.err
    features = feature_files(cache)
    for spelled in ("d", tmp_path / "d", "./d/"):
        again = cli(*RUN, "--out", out, "--data-dir", spelled)
        assert again.code == 0, again.err
        assert feature_files(cache) == features  # nothing extracted again
    records = records_of(out)
    assert len(records) == 1
    pm = get_plugin_manager(extra=["benchbone.testing"])
    unbound = expand(GridSpec(["test/tiny-cnn"], ["test/blobs"], ["linear-probe"], overrides={"c_steps": 2}),
                     pm.registries())[0]
    assert unbound.data_fingerprint is None and unbound.data_dir is None
    assert records[0]["cell_id"] == unbound.id  # the formula of records written before, for data that cannot differ


def test_image_files_are_keyed_by_what_was_read_not_by_the_spelling(cli, tmp_path):
    """imagefolder:data run in two folders whose data/ differ never reuses the first run's records or features;
    the same folder spelled relative, absolute, through --data-dir or a symlink is one cell."""
    one, two = tmp_path / "one", tmp_path / "two"
    image_folder(one / "data" / "train")
    image_folder(one / "data" / "test")
    image_folder(two / "data" / "train", classes=("b", "a"))  # the same class names, other images
    image_folder(two / "data" / "test", classes=("b", "a"))
    for folder in (two / "data" / "train", two / "data" / "test"):  # and other labels for the same pixels
        os.rename(folder / "a", folder / "tmp")
        os.rename(folder / "b", folder / "a")
        os.rename(folder / "tmp", folder / "b")
    out = tmp_path / "out"
    args = [*with_flags("-d", "imagefolder:data"), "--out", out]
    os.chdir(one)
    assert cli("run", *args).code == 0
    os.chdir(two)
    second = cli("run", *args)
    assert second.code == 0, second.err
    assert "cached" not in second.err
    assert len(records_of(out)) == 2  # other data: another cell
    os.chdir(tmp_path)
    (tmp_path / "link").symlink_to(one)
    for spelling in (["-d", f"imagefolder:{one / 'data'}"], ["-d", "imagefolder:data", "--data-dir", "one"],
                     ["-d", "imagefolder:data", "--data-dir", "link"]):
        again = cli("run", *with_flags(*spelling), "--out", out)
        assert again.code == 0, again.err
    assert len(records_of(out)) == 4 - 2  # the first run's cell every time
    assert {r["cell"]["data_fingerprint"] for r in records_of(out)} and all(
        r["cell"]["data_fingerprint"] for r in records_of(out))


def test_a_spec_stores_absolute_paths_and_runs_from_any_directory(cli, tmp_path):
    image_folder(tmp_path / "base" / "data" / "train")
    image_folder(tmp_path / "base" / "data" / "test")
    out = tmp_path / "out"
    written = cli("run", *with_flags("-d", "imagefolder:data"), "--data-dir", "base", "--out", "out",
                  "--executor", "specs")
    assert written.code == 0, written.err
    spec_file = next((out / "specs").glob("*.json"))
    spec = json.loads(spec_file.read_text())
    assert Path(spec["cell"]["data_dir"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    ran = cli("run-cell", spec_file)
    assert ran.code == 0, ran.err
    assert records_of(out)[0]["status"] == "ok"


def test_a_spec_that_cannot_be_run_still_writes_a_failed_record_saying_why(cli, tmp_path):
    image_folder(tmp_path / "data" / "train")
    image_folder(tmp_path / "data" / "test")
    out = tmp_path / "out"
    assert cli("run", *with_flags("-d", "imagefolder:data"), "--out", out, "--executor", "specs").code == 0
    spec_file = next((out / "specs").glob("*.json"))
    shutil.rmtree(tmp_path / "data" / "test")  # the data went away before the worker ran
    ran = cli("run-cell", spec_file)
    assert ran.code != 0 and "Traceback" not in ran.err
    (record,) = records_of(out)
    assert record["status"] == "failed" and "test" in record["error"], record["error"]
    assert record["cell_id"] == spec_file.stem
    spec = json.loads(spec_file.read_text())  # and one whose plugins cannot be loaded
    spec["plugins"] = {**spec["plugins"], "extra": [*spec["plugins"]["extra"], "no_such_benchbone_plugin"]}
    spec_file.write_text(json.dumps(spec))
    ran = cli("run-cell", spec_file)
    assert ran.code != 0 and "Traceback" not in ran.err
    (record,) = records_of(out)
    assert record["status"] == "failed" and "no_such_benchbone_plugin" in record["error"], record["error"]


def test_a_worker_whose_data_changed_since_planning_fails_its_cell(cli, tmp_path):
    image_folder(tmp_path / "data" / "train")
    image_folder(tmp_path / "data" / "test")
    out = tmp_path / "out"
    assert cli("run", *with_flags("-d", "imagefolder:data"), "--out", out, "--executor", "specs").code == 0
    spec_file = next((out / "specs").glob("*.json"))
    image_folder(tmp_path / "data" / "test", per_class=4)  # one more image per class
    ran = cli("run-cell", spec_file)
    assert ran.code != 0
    (record,) = records_of(out)
    assert record["status"] == "failed" and "changed" in record["error"], record["error"]


# ------------------------------------------------------------------ 7: the adversarial pass


def test_artefact_paths_leaving_the_run_directory_are_refused_by_every_reader(cli, tmp_path):
    from benchbone.records import write_record
    from benchbone.reporting.statistics import load_items

    out = tmp_path / "out"
    assert cli(*RUN, "-b", "test/tiny-cnn@random", "--out", out, "--seeds", "2").code == 0  # two rows: compared
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    records = records_of(out)
    moved = next(r for r in records if r["backbone"] == "test/tiny-cnn")
    shutil.copy(out / moved["artefacts"]["predictions"], elsewhere / "pred.npz")
    moved["artefacts"]["predictions"] = "../elsewhere/pred.npz"
    moved.pop("digest")
    write_record(out, moved)  # edited, with its digest recomputed: the digest detects damage, not editing
    with pytest.warns(UserWarning, match="outside its run directory"):
        items = load_items([r for r in records_of(out) if r["backbone"] == "test/tiny-cnn"], [out])
    assert isinstance(items, str)  # not read: the row cannot be compared
    for command in (["leaderboard", out], ["report", out, "-o", tmp_path / "r.html"]):
        shown = cli(*command)
        assert "outside its run directory" in shown.err, shown.err


@pytest.mark.parametrize("labels, classes, expect", [
    ("torch.tensor([0.7, 1.7] * 8)", '["a", "b"]', "integers"),
    ("['x', 'y'] * 8", '["a", "b"]', "integers"),
    ("torch.tensor([0, 2] * 8)", '["a", "b"]', "0..1"),
    ("torch.tensor([0, 1] * 8)", '["a", "a"]', "twice"),
])
def test_labels_and_class_names_are_checked_before_the_grid(cli, tmp_path, labels, classes, expect):
    plugin = plugin_file(tmp_path, DATASET_PLUGIN.format(labels=labels, classes=classes))
    shown = cli("run", *with_flags("-d", "trust/data"), "-p", plugin, "--out", tmp_path / "out")
    assert shown.code == 2, shown.err
    lines = shown.err.strip().splitlines()
    assert len(lines) == 1 and "trust/data" in lines[0] and expect in lines[0], shown.err
    assert not (tmp_path / "out").exists()


def test_runs_on_different_test_items_are_never_averaged_as_seeds(cli, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(*RUN, "--out", a).code == 0
    assert cli(*RUN, "--out", b, "--set", "test_per_class=5").code == 0
    shown = cli("leaderboard", a, b)
    assert shown.code == 2
    assert "different test items" in shown.err and len(shown.err.strip().splitlines()) == 1, shown.err
    assert cli("leaderboard", a).code == 0


def test_a_symlink_loop_among_the_images_is_skipped_with_a_count(cli, tmp_path):
    image_folder(tmp_path / "data" / "train")
    image_folder(tmp_path / "data" / "test")
    (tmp_path / "data" / "train" / "a" / "x.jpg").symlink_to("y.jpg")
    (tmp_path / "data" / "train" / "a" / "y.jpg").symlink_to("x.jpg")
    shown = cli("run", *with_flags("-d", "imagefolder:data"), "--out", tmp_path / "out")
    assert shown.code == 0, shown.err
    assert "skipped 2" in shown.err and "Traceback" not in shown.err


def test_an_unreadable_data_root_is_one_line(cli, tmp_path, monkeypatch):
    import errno
    import pathlib

    image_folder(tmp_path / "data" / "train")
    image_folder(tmp_path / "data" / "test")
    root, real = tmp_path / "data", pathlib.Path.stat

    def stat(self, *args, **kwargs):  # a root without search permission (the tests run as root)
        if Path(self).parent == root:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "stat", stat)
    shown = cli("run", *with_flags("-d", "imagefolder:data"), "--out", tmp_path / "out")
    assert shown.code == 2
    assert len(shown.err.strip().splitlines()) == 1 and str(root) in shown.err, shown.err


def test_a_pickle_planted_as_a_checkpoint_is_refused_naming_the_file(tmp_path):
    import torch

    from test_bad_inputs import Evil

    planted = tmp_path / "planted.pth"
    with open(planted, "wb") as f:  # a plain pickle, as planted by hand: torch warns about its protocol
        pickle.dump({"conv.weight": Evil()}, f)
    shown = run_subprocess("run", *BASE, "--weights", f"test/tiny-cnn={planted}", "--out", str(tmp_path / "out"))
    assert shown.returncode == 2
    assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr  # no torch warning lines before it
    assert str(planted) in shown.stderr and "weights_only=False" not in shown.stderr
    assert "unpickled" not in shown.stdout
    plugin = plugin_file(tmp_path, f"""
        import torch
        from benchbone import hookimpl

        def build(pretrained):  # as torch.hub, timm and transformers read a cached checkpoint
            torch.load({str(planted)!r}, map_location="cpu", weights_only=True)

        @hookimpl
        def benchbone_register_backbones(register):
            register("trust/planted", build)
    """)
    shown = run_subprocess("run", *with_flags("-b", "trust/planted"), "-p", str(plugin), "--out", str(tmp_path / "o"))
    assert shown.returncode == 2
    assert len(shown.stderr.strip().splitlines()) == 1, shown.stderr
    assert str(planted) in shown.stderr and "weights_only=False" not in shown.stderr, shown.stderr
    from benchbone.errors import UsageError
    from benchbone.inputs.weights import refused_checkpoint

    with pytest.raises(UsageError, match="planted.pth") as caught:
        with refused_checkpoint():
            torch.load(planted, weights_only=True)
    assert "weights_only=False" not in str(caught.value)


def test_train_images_identical_to_test_images_are_flagged(cli, tmp_path):
    image_folder(tmp_path / "data" / "train")
    image_folder(tmp_path / "data" / "test", size=10)  # other images
    shutil.copy(tmp_path / "data" / "test" / "a" / "0.png", tmp_path / "data" / "train" / "a" / "copy.png")
    shown = cli("run", *with_flags("-d", "imagefolder:data"), "--out", tmp_path / "out")
    assert shown.code == 0, shown.err
    assert "identical" in shown.err and "1 test image" in shown.err, shown.err


def test_in_memory_train_images_identical_to_test_images_are_flagged(cli, tmp_path):
    plugin = plugin_file(tmp_path, DATASET_PLUGIN.format(labels="torch.tensor([0, 1] * 8)", classes='["a", "b"]'))
    shown = cli("run", *with_flags("-d", "trust/data"), "-p", plugin, "--out", tmp_path / "out")
    assert shown.code == 0, shown.err
    assert "16 test images" in shown.err and "identical" in shown.err, shown.err


def test_sigterm_prints_one_line_and_loses_nothing(tmp_path):
    plugin = plugin_file(tmp_path, """
        import os, signal
        from benchbone import hookimpl

        def stop(backbone, data, ctx):
            os.kill(os.getpid(), signal.SIGTERM)

        @hookimpl
        def benchbone_register_strategies(register):
            register("trust/term", stop)
    """)
    done = run_subprocess("run", *BASE, "-p", str(plugin), "-s", "trust/term", "--out", str(tmp_path / "out"))
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("benchbone: terminated") and "Traceback" not in done.stderr, done.stderr
    assert len(records_of(tmp_path / "out")) == 1  # linear-probe's record, finished before, is kept


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("symlinks and signals as on Linux")
