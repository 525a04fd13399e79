"""Bad input, table-driven: every case is one line on stderr naming the thing and what to do, no traceback.

Errors (exit status 2) write nothing at all; damaged caches and records are reported in one warning line
and rebuilt (exit status 0), with the same numbers as a clean run; a failed cell is exit status 1.
docs/reliability.md lists the guarantees these cases prove.
"""
from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import torch

import benchbone
from benchbone.errors import UsageError
from benchbone.records import write_record

DEFAULTS = {"-b": ["-b", "test/tiny-cnn"], "-d": ["-d", "test/blobs"], "-s": ["-s", "linear-probe", "--set", "c_steps=2"]}
BASE = ["-p", "benchbone.testing", "-q", *(a for flags in DEFAULTS.values() for a in flags)]


def with_flags(*args) -> list[str]:
    """BASE with its -b, -d or -s (and -s's --set) replaced by those in ``args``, then ``args``."""
    args = [str(a) for a in args]
    return ["-p", "benchbone.testing", "-q", *(a for flag, flags in DEFAULTS.items() if flag not in args
                                               for a in flags), *args]


class Evil:
    def __reduce__(self):
        return (print, ("unpickled",))


def image_folder(root: Path, classes=("a", "b"), per_class: int = 3, size: int = 8) -> Path:
    from PIL import Image

    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (40 * k + 10 * i, 100, 200)).save(root / name / f"{i}.png")
    return root


def deny(monkeypatch, folder: Path) -> None:
    """Reading ``folder`` fails as it does without read permission (the tests run as root, where chmod does not)."""
    real, real_scandir = pathlib.Path.iterdir, os.scandir

    def iterdir(self):
        if Path(self) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    def scandir(path="."):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(pathlib.Path, "iterdir", iterdir)
    monkeypatch.setattr(os, "scandir", scandir)


def disk_full_below(monkeypatch, folder: Path, name: str = "") -> None:
    """Every write below ``folder`` (of a file whose name holds ``name``) fails as on a full disk."""
    real = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if Path(self).is_relative_to(folder) and name in Path(self).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


def setup_files(tmp: Path, monkeypatch) -> None:
    """The files that the error cases name."""
    from safetensors.torch import save_file

    (tmp / "file").write_text("not a directory")
    (tmp / "bad.toml").write_text('backbones = ["test/tiny-cnn"\n')
    (tmp / "unknown.toml").write_text('backbones = ["test/tiny-cnn"]\nbakbones = []\n')
    (tmp / "latin1.toml").write_bytes('backbones = ["caf\xe9"]\n'.encode("latin-1"))
    (tmp / "datadir7.toml").write_text('backbones = ["test/tiny-cnn"]\ndata_dir = 7\n')
    (tmp / "seeds.toml").write_text('seeds = "3"\n')
    (tmp / "names.toml").write_text("backbones = 5\n")
    (tmp / "set.toml").write_text('set = "c_steps=2"\n')
    (tmp / "device.toml").write_text("device = 0\n")
    save_file(torch.nn.Linear(8, 4).state_dict(), str(tmp / "other-arch.safetensors"))
    torch.save({"0.weight": Evil()}, tmp / "evil.pth")
    (tmp / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    (tmp / "weights.txt").write_text("0.5")
    (tmp / "empty").mkdir()
    image_folder(tmp / "one-image", per_class=1)
    image_folder(tmp / "unreadable")
    image_folder(tmp / "denied-class")
    image_folder(tmp / "garbage")
    for path in (tmp / "garbage").rglob("*.png"):
        path.write_bytes(b"not a png at all")
    image_folder(tmp / "differ" / "train", classes=("a", "b"))
    image_folder(tmp / "differ" / "test", classes=("a", "c"))
    (tmp / "plugin_fails.py").write_text("import benchbone_no_such_module\n")


def hf_dataset_without_labels(tmp: Path, monkeypatch) -> None:
    """A ``save_to_disk`` dataset whose only other column holds floats, not class labels."""
    import datasets
    import numpy as np

    grey = np.zeros((4, 4), np.uint8)
    features = datasets.Features({"img": datasets.Image(), "y": datasets.Value("float32")})
    datasets.disable_progress_bars()  # on stderr, which the case reads
    try:
        datasets.DatasetDict({split: datasets.Dataset.from_dict({"img": [grey, grey], "y": [0.5, 1.5]},
                                                                features=features)
                              for split in ("train", "test")}).save_to_disk(tmp / "hf-unlabelled")
    finally:
        datasets.enable_progress_bars()


@dataclass
class Case:
    id: str
    args: list[str]
    says: str
    before: Callable | None = None  # (tmp_path, monkeypatch) -> None, after the files are written
    base: list[str] | None = None  # instead of ``with_flags(*args)``


ERRORS = [
    # command line
    Case("unknown-backbone", ["-b", "tiny-cn"], "unknown backbone 'tiny-cn'. Did you mean test/tiny-cnn"),
    Case("unknown-dataset", ["-d", "blobz"], "unknown dataset 'blobz'"),
    Case("unknown-strategy", ["-s", "linear-prob"], "unknown strategy 'linear-prob'. Did you mean linear-probe"),
    Case("unknown-metric", ["-m", "top7"], "unknown metric 'top7'"),
    Case("no-strategy", [], "no strategy given", base=["-p", "benchbone.testing", "-b", "test/tiny-cnn",
                                                        "-d", "test/blobs", "-q"]),
    Case("seeds-zero", ["--seeds", "0"], "--seeds must be at least 1"),
    Case("seeds-not-a-number", ["--seeds", "three"], "argument --seeds: invalid int value: 'three'"),
    Case("unknown-flag", ["--frobnicate"], "unrecognized arguments: --frobnicate"),
    Case("weights-suffix", ["-b", "test/tiny-cnn@best"], "unknown weights suffix in 'test/tiny-cnn@best'"),
    Case("sort-by-unknown", ["--sort-by", "top7"], "--sort-by 'top7' is not a metric of this run"),
    Case("plugin-fails-to-import", ["-p", "{tmp}/plugin_fails.py"], "failed to import: ModuleNotFoundError"),
    # the run directory
    Case("out-is-a-file", ["--out", "{tmp}/file"], "--out {tmp}/file is a file, not a directory"),
    Case("out-below-a-file", ["--out", "{tmp}/file/run"], "lies below {tmp}/file, which is a file"),
    Case("out-read-only", ["--out", "{tmp}/ro/run"], "cannot write in {tmp}/ro (read-only or not permitted)",
         before=lambda tmp, mp: ((tmp / "ro").mkdir(), mp.setattr(
             "benchbone.records.os.access", lambda p, mode: Path(p) != tmp / "ro"))),
    Case("out-name-too-long", ["--out", "{tmp}/" + "x" * 300], "is longer than 255 bytes; pass a shorter --out"),
    # suite files
    Case("suite-malformed", ["--suite", "{tmp}/bad.toml"], "bad.toml: malformed TOML"),
    Case("suite-unknown-key", ["--suite", "{tmp}/unknown.toml"], "unknown.toml:2: unknown key 'bakbones'"),
    Case("suite-not-utf8", ["--suite", "{tmp}/latin1.toml"], "latin1.toml is not UTF-8 text"),
    Case("suite-data-dir-number", ["--suite", "{tmp}/datadir7.toml"], "datadir7.toml:2: data_dir must be a path"),
    Case("suite-seeds-string", ["--suite", "{tmp}/seeds.toml"], "seeds.toml:1: seeds must be a positive integer"),
    Case("suite-names-number", ["--suite", "{tmp}/names.toml"], "names.toml:1: backbones must be a list of names"),
    Case("suite-set-not-table", ["--suite", "{tmp}/set.toml"], "set.toml:1: [set] must be a table"),
    Case("suite-device-number", ["--suite", "{tmp}/device.toml"], "device.toml:1: device must be a string"),
    Case("suite-missing", ["--suite", "{tmp}/nowhere.toml"], "cannot read suite file {tmp}/nowhere.toml"),
    # --set
    Case("set-no-equals", ["--set", "c_steps"], "--set 'c_steps' is not key=value"),
    Case("set-unknown-key", ["--set", "nonsense=1"], "unknown parameter 'nonsense'"),
    Case("set-wrong-type", ["--set", "c_steps=many"], "--set c_steps='many': expected int"),
    Case("set-nan-tol", ["--set", "linear-probe.tol=nan"], "--set linear-probe.tol=nan: give a finite number"),
    Case("set-nan-temperature", ["-s", "knn", "--set", "knn.temperature=nan"], "knn.temperature=nan: give a finite"),
    Case("set-inf-temperature", ["-s", "knn", "--set", "knn.temperature=inf"], "knn.temperature=inf: give a finite"),
    Case("set-strategy-check", ["-s", "finetune", "--set", "finetune.epochs=0"], "finetune: need epochs >= 1"),
    Case("set-knn-check", ["-s", "knn", "--set", "knn.k=0"], "knn: need k >= 1"),
    Case("set-strategy-not-in-run", ["--set", "knn.k=3"], "--set knn.k: strategy 'knn' is not in this run"),
    Case("set-val-fraction", ["--set", "val_fraction=1.5"], "--set val_fraction=1.5: give a fraction between 0 and 1"),
    Case("set-image-size", ["--set", "image_size=4"], "--set image_size=4: give a whole number of pixels >= 8"),
    Case("set-precision", ["--set", "precision=fp8"], "--set precision='fp8': use one of auto, fp32, bf16, fp16"),
    # sizes the splits cannot give, checked before the first cell
    Case("shots-above-smallest-class", ["--set", "shots=1000"],
         "linear-probe: shots=1000 but class 0 has only 21 training images ('class0', after the validation "
         "carve); ask for at most 21"),
    Case("train-size-above-split", ["--set", "train_size=100000"],
         "--set train_size=100000: the train split has only 86 images after the validation carve"),
    Case("val-size-above-split", ["--set", "val_size=96"],
         "--set val_size=96: the train split has 96 images, and a validation carve needs fewer; ask for at most 95"),
    Case("train-size-zero", ["--set", "train_size=0"], "--set train_size=0: give a whole number of images >= 1"),
    Case("train-size-and-per-class", ["--set", "train_size=10", "--set", "train_per_class=2"],
         "--set train_size excludes train_per_class and train_fraction"),
    # test conditions, layers and Hugging Face columns
    Case("corruption-unknown", ["--set", "corruption=gausian_noise"],
         "--set corruption=gausian_noise: unknown corruption (did you mean gaussian_noise?)"),
    Case("corruption-severity", ["--set", "corruption=fog", "--set", "severity=6"],
         "--set severity=6: severities are whole numbers 1 to 5"),
    Case("layer-unknown", ["-b", "efficientnet_lite0", "-s", "knn", "--set", "layer=blocks.3"],
         "--set layer=blocks.3: backbone 'efficientnet_lite0' has no layer 'blocks.3'; its layers: blocks.0, "
         "blocks.1, blocks.2, blocks.4, blocks.6"),
    Case("hf-no-label-column", ["-d", "hf:{tmp}/hf-unlabelled", "-s", "knn"],
         "no label column (columns: img (Image), y (Value)); pass --set label_column=NAME",
         before=hf_dataset_without_labels),
    # data
    Case("data-missing", ["-d", "imagefolder:{tmp}/missing"], "imagefolder: {tmp}/missing does not exist"),
    Case("data-empty", ["-d", "imagefolder:{tmp}/empty"], "{tmp}/empty is empty"),
    Case("data-one-image-per-class", ["-d", "imagefolder:{tmp}/one-image"], "holds one image"),
    Case("data-second-dataset-broken", ["-d", "test/blobs", "-d", "imagefolder:{tmp}/garbage"],
         "cannot read image {tmp}/garbage/a/0.png"),
    Case("data-root-unreadable", ["-d", "imagefolder:{tmp}/unreadable"],
         "cannot read data directory {tmp}/unreadable: Permission denied",
         before=lambda tmp, mp: deny(mp, tmp / "unreadable")),
    Case("data-class-folder-unreadable", ["-d", "imagefolder:{tmp}/denied-class"],
         "cannot read data directory {tmp}/denied-class/b: Permission denied",
         before=lambda tmp, mp: deny(mp, tmp / "denied-class" / "b")),
    Case("data-not-images", ["-d", "imagefolder:{tmp}/garbage"], "cannot read image {tmp}/garbage/a/0.png"),
    Case("data-classes-differ", ["-d", "imagefolder:{tmp}/differ"], "class folders differ between"),
    # weights
    Case("weights-pickle-with-code", ["--weights", "test/tiny-cnn={tmp}/evil.pth"],
         "cannot read weights file {tmp}/evil.pth: it holds code or objects that are not plain tensors, and "
         "benchbone refuses to unpickle it"),
    Case("weights-other-architecture", ["--weights", "test/tiny-cnn={tmp}/other-arch.safetensors"],
         "weights do not fit this backbone"),
    Case("weights-missing-file", ["--weights", "test/tiny-cnn={tmp}/nowhere.pth"], "no such file"),
    Case("weights-suffix", ["--weights", "test/tiny-cnn={tmp}/weights.txt"], "is not one of .safetensors"),
    Case("weights-truncated", ["--weights", "test/tiny-cnn={tmp}/truncated.safetensors"], "cannot read weights file"),
    Case("weights-no-equals", ["--weights", "{tmp}/evil.pth"], "is not NAME=PATH"),
    Case("weights-backbone-not-in-run", ["--weights", "test/tiny-cnn={tmp}/evil.pth", "-b", "test/tiny-cnn@random"],
         "backbone 'test/tiny-cnn' is not in this run"),
]


def snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if "__pycache__" not in p.parts}


def one_line(err: str, start: str) -> str:
    assert err.count("\n") == 1 and err.startswith(start), err
    assert "Traceback" not in err
    return err.strip()


@pytest.mark.parametrize("case", ERRORS, ids=[c.id for c in ERRORS])
def test_error_is_one_line_exit_2_and_nothing_written(case, tmp_path, monkeypatch, cli):
    setup_files(tmp_path, monkeypatch)
    if case.before:
        case.before(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    result = cli("run", *(case.base + args if case.base is not None else with_flags(*args)))
    assert result.code == 2, result.err
    line = one_line(result.err, "benchbone: error: ")
    assert case.says.replace("{tmp}", str(tmp_path)) in line
    assert "unpickled" not in result.out
    assert snapshot(tmp_path) == before  # no run directory, no cache, no file anywhere


# --- the Python API: the same UsageErrors as the CLI, nothing written --------------------------------------------

API = [
    ("seeds-string", dict(seeds="3"), "seeds='3'"),
    ("seeds-float", dict(seeds=2.5), "seeds=2.5"),
    ("seeds-bool", dict(seeds=True), "seeds=True"),
    ("backbones-number", dict(backbones=123), "backbones=123"),
    ("datasets-list-of-numbers", dict(datasets=[1, 2]), "datasets=[1, 2]"),
    ("params-list", dict(params=["c_steps=2"]), "params=['c_steps=2']"),
    ("out-number", dict(out=5), "out=5"),
    ("out-is-a-file", dict(out="{tmp}/file"), "--out {tmp}/file is a file"),
]


@pytest.mark.parametrize("name, change, says", API, ids=[a[0] for a in API])
def test_python_api_raises_the_clis_usage_error(name, change, says, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    kwargs = dict(backbones="test/tiny-cnn", datasets="test/blobs", strategies="linear-probe",
                  params={"c_steps": 2}, out=str(tmp_path / "out"), plugins=["benchbone.testing"])
    kwargs.update({k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in change.items()})
    before = snapshot(tmp_path)
    with pytest.raises(UsageError) as info:
        benchbone.run(**kwargs)
    assert says.replace("{tmp}", str(tmp_path)) in str(info.value) and "\n" not in str(info.value)
    assert snapshot(tmp_path) == before


# --- damaged caches, records and artefacts: one warning line, rebuilt, the same numbers -------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished two-seed run with its cache, copied by each test below."""
    from benchbone.cli import main

    root = tmp_path_factory.mktemp("finished")
    assert main(["run", *BASE, "--seeds", "2", "--out", str(root / "run"), "--cache-dir", str(root / "cache")]) == 0
    return root


def comparable(board: pd.DataFrame) -> pd.DataFrame:
    measured = ("time", "images_per_s", "peak_mem")
    return board[[c for c in board.columns if not any(m in c for m in measured) and not c.endswith("_at")]]


def records_of(run: Path) -> list[Path]:
    return sorted((run / "records").glob("*.json"))


def features_of(cache: Path) -> list[Path]:
    return sorted((cache / "features").glob("*.safetensors"))


def alter_digit(run, cache, tmp):
    path = records_of(run)[0]
    record = json.loads(path.read_text())
    record["metrics"]["top1"] = round(1 - record["metrics"]["top1"], 6)  # one number changed by hand
    path.write_text(json.dumps(record))
    return path


def copy_other_cells_record(run, cache, tmp):
    first, second = records_of(run)
    second.write_bytes(first.read_bytes())
    return second


def stub_record(run, cache, tmp):
    path = records_of(run)[0]
    path.write_text('{"schema": 1, "status": "ok"}')
    return path


def stub_record_with_digest(run, cache, tmp):
    path = records_of(run)[0]
    write_record(run, {"schema": 1, "status": "ok", "cell_id": path.stem})  # sound digest, no result in it
    return path


def old_record(run, cache, tmp):
    path = records_of(run)[0]
    record = json.loads(path.read_text())
    del record["digest"]
    path.write_text(json.dumps(record))
    return path


def copy_other_key_features(run, cache, tmp):
    first, second = features_of(cache)
    second.write_bytes(first.read_bytes())  # a valid file, of another key
    shutil.rmtree(run)  # so that the cells run again and read it
    return second


def copy_other_backbones_features(run, cache, tmp):
    """The cache of another backbone (other weights) copied under this key's name: flips a ranking unchecked."""
    from benchbone.cli import main

    other = tmp / "other-cache"
    assert main(["run", *with_flags("-b", "test/tiny-cnn@random"), "--out", str(tmp / "other"),
                 "--cache-dir", str(other)]) == 0
    mine, theirs = features_of(cache), features_of(other)
    for target, source in zip(mine, theirs):
        target.write_bytes(source.read_bytes())
    shutil.rmtree(run)
    return mine[0]


DAMAGE = [
    ("record-altered-digit", alter_digit, "its content does not match its digest", 1),
    ("record-of-another-cell", copy_other_cells_record, "it is the record of cell", 1),
    ("record-stub", stub_record, "it has no digest", 1),
    ("record-stub-with-digest", stub_record_with_digest, "it lacks backbone, dataset, strategy, seed", 1),
    ("record-without-digest", old_record, "is not trusted (it has no digest: written by an older benchbone", 1),
    ("cache-of-another-key", copy_other_key_features, "written for key", 1),
    ("cache-of-another-backbone", copy_other_backbones_features, "written for key", 2),
]


@pytest.mark.parametrize("name, damage, says, warnings", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damage_is_reported_in_one_line_and_rebuilt(name, damage, says, warnings, finished, tmp_path, cli):
    run, cache = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(finished / "run", run)
    shutil.copytree(finished / "cache", cache)
    damaged = damage(run, cache, tmp_path)
    result = cli("run", *BASE, "--seeds", "2", "--out", run, "--cache-dir", cache)
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert len(lines) == warnings and "Traceback" not in result.err, result.err
    assert all(line.startswith("benchbone: warning: ") and str(damaged.parent) in line for line in lines)
    assert says in lines[0] and str(damaged) in result.err
    pd.testing.assert_frame_equal(comparable(pd.read_csv(finished / "run" / "leaderboard.csv")),
                                  comparable(pd.read_csv(run / "leaderboard.csv")))
    assert cli("leaderboard", run).err == ""  # every record sound again


def test_a_damaged_record_is_never_read_as_truth_by_the_leaderboard(finished, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    damaged = copy_other_cells_record(run, None, tmp_path)  # would make one row count two seeds
    board = cli("leaderboard", run, "-f", "json")
    assert board.code == 0
    other = json.loads(damaged.read_text())["cell_id"]
    assert one_line(board.err, "benchbone: warning: ") == (
        f"benchbone: warning: record {damaged} is damaged (it is the record of cell {other!r}, not "
        f"{damaged.stem!r}: copied over); left out of the leaderboard")
    (row,) = json.loads(board.out)
    assert row["seeds"] == 1


def test_a_cache_directory_that_cannot_be_written_is_reported_once(finished, tmp_path, cli):
    (tmp_path / "file").write_text("not a directory")
    result = cli("run", *BASE, "--seeds", "2", "--out", tmp_path / "run", "--cache-dir", tmp_path / "file")
    assert result.code == 0
    line = one_line(result.err, "benchbone: warning: cache directory")
    assert f"{tmp_path / 'file'} cannot be written" in line and "running without caching" in line
    pd.testing.assert_frame_equal(comparable(pd.read_csv(finished / "run" / "leaderboard.csv")),
                                  comparable(pd.read_csv(tmp_path / "run" / "leaderboard.csv")))


def test_a_full_cache_disk_is_reported_once_and_the_run_goes_on(finished, tmp_path, monkeypatch, cli):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    result = cli("run", *BASE, "--seeds", "2", "--out", tmp_path / "run", "--cache-dir", tmp_path / "cache")
    assert result.code == 0
    line = one_line(result.err, "benchbone: warning: cache")
    assert f"cache directory {tmp_path / 'cache'} cannot be written (No space left on device; " in line
    assert "bytes needed); running without caching" in line
    assert features_of(tmp_path / "cache") == []
    pd.testing.assert_frame_equal(comparable(pd.read_csv(finished / "run" / "leaderboard.csv")),
                                  comparable(pd.read_csv(tmp_path / "run" / "leaderboard.csv")))


@pytest.mark.parametrize("full_at", ["", ".json."])  # every write (the first is an artefact), or only the record's
def test_a_full_run_disk_is_one_line_naming_the_directory(full_at, finished, tmp_path, monkeypatch, cli):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    kept = {p.name: p.read_bytes() for p in records_of(run)}
    disk_full_below(monkeypatch, run, full_at)
    result = cli("run", *BASE, "--seeds", "3", "--out", run, "--cache-dir", finished / "cache")
    assert result.code == 2
    line = one_line(result.err, "benchbone: error: cannot write ")
    assert "No space left on device" in line and f"bytes needed in {run}" in line
    assert {p.name: p.read_bytes() for p in records_of(run)} == kept  # the finished records are intact
    assert not [p for p in run.rglob("*.tmp")]


# --- the report and leaderboard outputs ---------------------------------------------------------------------

def traversal(run: Path, artefact: str, where: str) -> None:
    path = records_of(run)[0]
    record = json.loads(path.read_text())
    record["artefacts"][artefact] = where
    write_record(run, record)  # a record with a sound digest: the path itself is the attack


@pytest.mark.parametrize("where", ["../../secret/secret.csv", "/etc/passwd", "{secret}", "link.csv"])
def test_report_reads_no_artefact_outside_its_run_directory(where, finished, tmp_path, cli):
    run = tmp_path / "a" / "run"
    shutil.copytree(finished / "run", run)
    secret = tmp_path / "secret" / "secret.csv"
    secret.parent.mkdir()
    secret.write_text("class,support,accuracy\nTOP-SECRET,1,1.0\n")
    (run / "link.csv").symlink_to(secret)  # inside the run directory, leading out of it
    traversal(run, "per_class_csv", where.replace("{secret}", str(secret)))
    result = cli("report", run, "-o", tmp_path / "report.html")
    assert result.code == 0
    warning, wrote = result.err.splitlines()
    assert warning.startswith("benchbone: warning: record ") and "outside its run directory; skipped" in warning
    assert wrote.startswith("benchbone: wrote")
    page = (tmp_path / "report.html").read_text()
    assert "TOP-SECRET" not in page and "root:" not in page


def test_an_unreadable_artefact_is_skipped_with_one_line(finished, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    record = json.loads(records_of(run)[0].read_text())
    (run / record["artefacts"]["confusion_csv"]).write_bytes(b"\x00\x01garbage\n\xff")
    result = cli("report", run)
    assert result.code == 0
    assert "is unreadable" in result.err.splitlines()[0] and len(result.err.splitlines()) == 2


OUTPUTS = [
    ("report-o-directory", ["report", "{run}", "-o", "{tmp}"], "-o {tmp} is a directory"),
    ("report-o-below-a-file", ["report", "{run}", "-o", "{tmp}/file/report.html"], "which is a file"),
    ("report-missing-run", ["report", "{tmp}/nowhere"], "run directory {tmp}/nowhere does not exist"),
    ("report-empty-run", ["report", "{tmp}/empty"], "holds no records"),
    ("leaderboard-o-directory", ["leaderboard", "{run}", "-o", "{tmp}"], "-o {tmp} is a directory"),
    ("leaderboard-plot-suffix", ["leaderboard", "{run}", "--plot", "{tmp}/plot.svg"], "give a file name ending in .png"),
    ("leaderboard-sort-by", ["leaderboard", "{run}", "--sort-by", "top7"], "cannot sort by 'top7'"),
]


@pytest.mark.parametrize("name, args, says", OUTPUTS, ids=[o[0] for o in OUTPUTS])
def test_report_and_leaderboard_outputs_are_checked(name, args, says, finished, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    before = snapshot(tmp_path)
    result = cli(*[a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in args])
    assert result.code == 2
    assert says.replace("{tmp}", str(tmp_path)) in one_line(result.err, "benchbone: error: ")
    assert snapshot(tmp_path) == before


# --- failed cells, class names ---------------------------------------------------------------------------

FAILING = '''
from benchbone import hookimpl
@hookimpl
def benchbone_register_strategies(register):
    def broken(backbone, data, ctx):
        raise RuntimeError("this strategy always fails")

    register("fail/always", broken)
'''


def test_a_failed_cell_prints_its_line_also_with_q(tmp_path, cli):
    (tmp_path / "failing.py").write_text(FAILING)
    result = cli("run", *with_flags("-s", "fail/always"), "-p", tmp_path / "failing.py", "--out", tmp_path / "run")
    assert result.code == 1
    line = one_line(result.err, "  FAILED test/tiny-cnn x test/blobs x fail/always (seed 0)")
    assert line.endswith("RuntimeError: this strategy always fails")


MATHTEXT = '''
from benchbone import DatasetSplits, hookimpl
from benchbone.testing import blobs


@hookimpl
def benchbone_register_datasets(register):
    def tex(data_dir, download):
        data = blobs(data_dir, download)
        return DatasetSplits(data.train, data.test, ["$x^2$", r"$\\frac{1}{0", "a_b$", "$$"])

    register("tex/blobs", tex)
'''


def test_class_names_are_never_interpreted_as_mathtext(tmp_path, cli):
    (tmp_path / "tex.py").write_text(MATHTEXT)
    result = cli("run", *with_flags("-d", "tex/blobs"), "-p", tmp_path / "tex.py", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    (record,) = records_of(tmp_path / "run")
    assert (tmp_path / "run" / json.loads(record.read_text())["artefacts"]["confusion_png"]).stat().st_size > 0
