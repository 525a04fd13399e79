"""Reliability and security: resume after SIGKILL, damaged files, concurrent runs, isolated failures,
bad input, safe loading and path traversal. docs/reliability.md maps each guarantee to its test here."""
import gc
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchbone.inputs.feature_cache import FeatureStore
from benchbone.planning.grid import GridSpec, expand
from benchbone.plugins import DEFAULT_PLUGINS, get_plugin_manager
from benchbone.records import record_path

TINY = ["-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-q"]

SLOW_PLUGIN = '''
import os, time
import torch
from benchbone import Predictions, hookimpl
from benchbone.testing import tiny_cnn


def log(line):
    with open(os.environ["BENCHBONE_TEST_LOG"], "a") as f:
        f.write(line + "\\n")


@hookimpl
def benchbone_register_backbones(register):
    def build(pretrained):
        backbone = tiny_cnn(pretrained)

        def slow(module, inputs, output):
            if len(inputs[0]) > 1:  # a feature batch, not the one image of the GMACs count
                log("batch")
                time.sleep(0.05)

        backbone.model.register_forward_hook(slow)
        return backbone

    register("slow/cnn", build)


@hookimpl
def benchbone_register_strategies(register):
    def centroid(backbone, data, ctx):
        X, y = ctx.features("train")
        keep = torch.randperm(len(y), generator=ctx.generator())[: len(y) * 3 // 4]  # numbers depend on the seed
        centers = torch.stack([X[keep][y[keep] == k].mean(0) for k in range(ctx.num_classes)])
        Xt, yt = ctx.features("test")
        scores = torch.softmax(-torch.cdist(Xt, centers), 1)
        time.sleep(0.15)
        log(f"cell {ctx.seed}")
        return Predictions(yt, scores.argmax(1), scores)

    register("slow/centroid", centroid)
'''


class Evil:
    """Unpickling this writes a file: what a tampered pickle could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def comparable(board: pd.DataFrame) -> pd.DataFrame:
    """A leaderboard without the columns that measure time, speed or memory of this machine."""
    measured = ("time", "images_per_s", "peak_mem")
    return board[[c for c in board.columns if not any(m in c for m in measured) and not c.endswith("_at")]]


def leftovers(run_dir: Path) -> list[Path]:
    """Temporary or scratch files a run should not leave behind."""
    return [p for p in run_dir.rglob("*") if p.name.endswith(".tmp") or p.name == "work"]


def write_plugin(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return path


def kept_as_it_was(before: bytes, after: bytes) -> bool:
    """Whether a record file a stopped run left is, after the next run, the same byte for byte; or, when the run
    stopped before drawing its confusion PNG (``artefacts_pending``), the same record completed with it."""
    if after == before:
        return True
    old, new = json.loads(before), json.loads(after)
    rest = lambda r: {k: v for k, v in r.items() if k not in ("artefacts", "artefacts_pending", "digest")}  # noqa: E731
    return (old.get("artefacts_pending") == ["confusion_png"] and "artefacts_pending" not in new
            and new["artefacts"] == {**old["artefacts"], "confusion_png": f"artefacts/{old['cell_id']}/confusion.png"}
            and rest(new) == rest(old))


# --- resume after SIGKILL -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_several_points_loses_and_recomputes_nothing(tmp_path, monkeypatch, cli):
    plugin, log = write_plugin(tmp_path, "slow", SLOW_PLUGIN), tmp_path / "log.txt"
    monkeypatch.setenv("BENCHBONE_TEST_LOG", str(log))
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["run", "-p", "benchbone.testing", "-p", str(plugin), "-b", "slow/cnn", "-d", "test/blobs",
            "-s", "slow/centroid", "--seeds", "6", "--set", "batch_size=8", "-q"]

    def records() -> list[Path]:
        return sorted((out / "records").glob("*.json"))

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    def kill_when(ready) -> dict[str, bytes]:
        with open(tmp_path / "stderr.txt", "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "benchbone.cli", *args, "--out", str(out),
                                     "--cache-dir", str(cache)], stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None, f"the run ended before the kill point: {(tmp_path / 'stderr.txt').read_text()}"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return {p.name: p.read_bytes() for p in records()}

    during_features = kill_when(lambda: "batch" in lines())
    assert during_features == {}
    after_two = kill_when(lambda: len(records()) >= 2)
    after_four = kill_when(lambda: len(records()) >= 4)
    assert len(after_four) >= 4 and set(after_two) <= set(after_four)

    before_last = len(lines())
    result = cli(*args, "--out", out, "--cache-dir", cache)
    assert result.code == 0, result.err
    final = {p.name: p.read_bytes() for p in records()}
    assert len(final) == 6 and all(json.loads(text)["status"] == "ok" for text in final.values())
    for name, text in {**after_two, **after_four}.items():
        assert kept_as_it_was(text, final[name])  # finished cells were neither lost nor recomputed
    assert sum(line.startswith("cell") for line in lines()[before_last:]) == 6 - len(after_four)
    assert leftovers(out) == []

    reference = cli(*args, "--out", tmp_path / "whole", "--cache-dir", tmp_path / "cache2")
    assert reference.code == 0
    pd.testing.assert_frame_equal(comparable(pd.read_csv(out / "leaderboard.csv")),
                                  comparable(pd.read_csv(tmp_path / "whole" / "leaderboard.csv")))


def test_stale_temporary_files_go_and_a_damaged_record_is_redone(tmp_path, cli):
    out = tmp_path / "run"
    args = ["run", *TINY, "-s", "linear-probe", "--set", "c_steps=2", "--seeds", "2", "--out", out]
    assert cli(*args).code == 0
    first, second = sorted((out / "records").glob("*.json"))
    kept = second.read_bytes()
    first.write_text('{"schema": 1, "status": "ok", "cell_id": ')  # a writer that was cut off
    host_pid = __import__("benchbone.records", fromlist=["_WRITER"])._WRITER
    host = host_pid.rpartition("-")[0]
    dead = out / "records" / f".x.json.{host}-{2 ** 22 + 12345}.abc123.tmp"  # above any pid_max: dead
    live = out / "records" / f".y.json.{host_pid}.abc123.tmp"  # this process: alive, maybe still writing
    other_host = out / "records" / ".z.json.otherhost-1.abc123.tmp"
    for path in (dead, live, other_host):
        path.write_text("partial")

    result = cli(*args)
    assert result.code == 0
    warnings = [line for line in result.err.splitlines() if line.startswith("benchbone: warning")]
    assert warnings == [(f"benchbone: warning: record {first} is damaged (not a benchbone record of schema 1); "
                         "running its cell again")]
    assert json.loads(first.read_text())["status"] == "ok" and second.read_bytes() == kept
    assert not dead.exists() and live.exists() and other_host.exists()

    first.write_text("not json")
    board = cli("leaderboard", out, "-f", "json")
    assert board.code == 0 and len(json.loads(board.out)) == 1
    assert board.err.startswith(f"benchbone: warning: record {first} is damaged") and board.err.count("\n") == 1


# --- caches ---------------------------------------------------------------------------------------------------

def test_damaged_feature_cache_is_reported_and_rebuilt(tmp_path, cli):
    cache, marker = tmp_path / "cache", tmp_path / "unpickled"
    args = ["run", *TINY, "-s", "linear-probe", "--set", "c_steps=2", "--cache-dir", cache]
    assert cli(*args, "--out", tmp_path / "whole").code == 0
    files = sorted((cache / "features").glob("*.safetensors"))
    assert len(files) == 2  # train and test

    def truncate(data: bytes) -> bytes:
        return data[: len(data) // 2]

    def flip(data: bytes) -> bytes:  # numbers changed, size and header kept
        return data[:-8] + bytes(b ^ 0xFF for b in data[-8:])

    def pickle(data: bytes) -> bytes:  # a pickle that runs code where a feature file belongs
        torch.save({"features": Evil(marker)}, tmp_path / "evil.pt")
        return (tmp_path / "evil.pt").read_bytes()

    for out, damages in (("a", (truncate, pickle)), ("b", (flip, flip))):
        for path, damage in zip(files, damages):
            path.write_bytes(damage(path.read_bytes()))
        result = cli(*args, "--out", tmp_path / out)
        assert result.code == 0
        warned = [line for line in result.err.splitlines() if line.startswith("benchbone: warning")]
        assert len(warned) == 2 and all(line.startswith("benchbone: warning: cache file") and "damaged" in line
                                        for line in warned), result.err
        assert all(FeatureStore(cache).load(path.stem) is not None for path in files)  # rebuilt, whole again
        pd.testing.assert_frame_equal(comparable(pd.read_csv(tmp_path / "whole" / "leaderboard.csv")),
                                      comparable(pd.read_csv(tmp_path / out / "leaderboard.csv")))
    assert not marker.exists()


@pytest.mark.slow
def test_two_runs_sharing_a_cache_at_once(tmp_path):
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "benchbone.cli", "run", *TINY, "-s", "linear-probe", "-s", "knn",
            "--set", "c_steps=2", "--seeds", "2", "--cache-dir", str(cache)]
    procs = [subprocess.Popen([*args, "--out", str(tmp_path / out)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for out in ("a", "b")]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    assert not any("benchbone: warning" in err for err in errors)
    pd.testing.assert_frame_equal(comparable(pd.read_csv(tmp_path / "a" / "leaderboard.csv")),
                                  comparable(pd.read_csv(tmp_path / "b" / "leaderboard.csv")))
    store = FeatureStore(cache)
    assert all(store.load(p.stem) is not None for p in (cache / "features").glob("*.safetensors"))
    assert leftovers(tmp_path) == []


CHANGING_PLUGIN = """
import os
import torch
from benchbone import hookimpl
from benchbone.testing import tiny_cnn


@hookimpl
def benchbone_register_backbones(register):
    def build(pretrained):
        backbone = tiny_cnn(pretrained)  # its weights label stays "tiny-seeded" whatever the weights are
        torch.manual_seed(int(os.environ["BENCHBONE_TEST_WEIGHTS"]))
        for parameter in backbone.model.parameters():
            torch.nn.init.normal_(parameter)
        return backbone

    register("test/changing", build)
"""


def test_changed_weights_under_the_same_name_and_label_get_new_features(tmp_path, monkeypatch, cli):
    plugin = write_plugin(tmp_path, "changing", CHANGING_PLUGIN)
    args = ["run", "-p", "benchbone.testing", "-p", plugin, "-b", "test/changing", "-d", "test/blobs", "-s", "knn", "-q",
            "--cache-dir", tmp_path / "cache"]

    def features(weights: str, out: str) -> dict:
        monkeypatch.setenv("BENCHBONE_TEST_WEIGHTS", weights)
        assert cli(*args, "--out", tmp_path / out).code == 0
        (record,) = (tmp_path / out / "records").glob("*.json")
        record = json.loads(record.read_text())
        assert record["backbone_info"]["weights"] == "tiny-seeded"
        return {split: record["features"][split]["cached"] for split in ("train", "test")}  # val: train's rows

    assert features("1", "a") == {"train": False, "test": False}
    assert features("2", "b") == {"train": False, "test": False}  # not the first weights' features
    assert features("1", "c") == {"train": True, "test": True}
    assert len(list((tmp_path / "cache" / "features").glob("*.safetensors"))) == 4


def test_decode_cache_file_of_another_key_is_rejected(tmp_path, cli):
    from PIL import Image

    for split, shade in (("train", 0), ("test", 120)):
        for k, name in enumerate(("a", "b")):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(6):
                Image.new("RGB", (8, 8), (shade + 60 * k, 10 * i, 90)).save(tmp_path / "data" / split / name / f"{i}.png")
    cache = tmp_path / "cache"
    args = ["run", *TINY, "-d", f"imagefolder:{tmp_path / 'data'}", "-s", "knn", "--cache-dir", cache]
    assert cli(*args, "--out", tmp_path / "a").code == 0
    first, second = sorted((cache / "images").glob("*.safetensors"))  # train and test, 12 images each
    second.write_bytes(first.read_bytes())
    for folder in (cache / "features", tmp_path / "a"):
        shutil.rmtree(folder)
    result = cli(*args, "--out", tmp_path / "a")
    assert result.code == 0
    assert result.err.startswith(f"benchbone: warning: cache file {second} is damaged (written for key ")
    assert result.err.count("\n") == 1
    result = cli(*args, "--out", tmp_path / "b")
    assert result.err == ""
    pd.testing.assert_frame_equal(comparable(pd.read_csv(tmp_path / "a" / "leaderboard.csv")),
                                  comparable(pd.read_csv(tmp_path / "b" / "leaderboard.csv")))


LOCK_PLUGIN = SLOW_PLUGIN.replace("time.sleep(0.05)", "time.sleep(0.25)").replace(
    'log("batch")', 'log(f"batch {os.getpid()}")') + """
log(f"loaded {os.getpid()}")
"""


@pytest.mark.slow
def test_two_runs_sharing_a_cache_compute_each_feature_set_once(tmp_path):
    plugin, log = write_plugin(tmp_path, "locked", LOCK_PLUGIN), tmp_path / "log.txt"
    args = [sys.executable, "-m", "benchbone.cli", "run", "-p", "benchbone.testing", "-p", str(plugin), "-b", "slow/cnn",
            "-d", "test/blobs", "-s", "slow/centroid", "--seeds", "2", "--set", "batch_size=16", "-q",
            "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "BENCHBONE_TEST_LOG": str(log)}
    procs = [subprocess.Popen([*args, "--out", str(tmp_path / out)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              text=True, env=env) for out in ("a", "b")]
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], errors
    lines = log.read_text().splitlines()
    loaded = [i for i, line in enumerate(lines) if line.startswith("loaded")]
    batches = [(i, line.split()[1]) for i, line in enumerate(lines) if line.startswith("batch")]
    assert len(loaded) == 2 and max(loaded) < batches[-1][0]  # both runs were up while features were extracted
    assert len({pid for _, pid in batches}) == 1  # and one of them extracted them all: train (96) and test (48)
    assert len(batches) == 96 // 16 + 48 // 16
    extracted = [e["cached"] for out in ("a", "b") for r in (tmp_path / out / "records").glob("*.json")
                 for e in json.loads(r.read_text())["features"].values()]
    assert extracted.count(False) == 2  # train (with the val rows carved from it) and test: once each
    pd.testing.assert_frame_equal(comparable(pd.read_csv(tmp_path / "a" / "leaderboard.csv")),
                                  comparable(pd.read_csv(tmp_path / "b" / "leaderboard.csv")))


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, cli):
    cache = tmp_path / "cache"
    args = ["run", *TINY, "-s", "knn", "--cache-dir", cache]
    assert cli(*args, "--out", tmp_path / "a").code == 0
    files = sorted((cache / "features").glob("*.safetensors"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom filelock import FileLock\n"
        "locks = [FileLock(p + '.lock') for p in sys.argv[1:]]\n"
        "[lock.acquire() for lock in locks]\nprint('held', flush=True)\ntime.sleep(300)\n"),
        *map(str, files)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    holder.send_signal(signal.SIGKILL)  # dies holding every lock: its lock files stay behind
    holder.wait()
    for path in files:
        path.unlink()
    assert all(Path(f"{path}.lock").exists() for path in files)
    started = time.monotonic()
    result = cli(*args, "--out", tmp_path / "b")
    assert result.code == 0 and result.err == "" and time.monotonic() - started < 120
    assert all(FeatureStore(cache).load(path.stem) is not None for path in files)  # computed again and kept


INTERRUPT_PLUGIN = SLOW_PLUGIN + """
import benchbone.reporting.leaderboard
import benchbone.records
import benchbone_plugins.linear_probe

_minimise = benchbone_plugins.linear_probe.minimise


def slow_minimise(*args, **kwargs):
    log("sweep")
    time.sleep(0.1)
    return _minimise(*args, **kwargs)


def slow_write_atomic(path, text):
    with benchbone.records.atomic_path(path) as tmp:
        tmp.write_text(text[: len(text) // 2])
        log("leaderboard")
        time.sleep(30)
        tmp.write_text(text)


if os.environ.get("BENCHBONE_TEST_SLOW"):
    benchbone_plugins.linear_probe.minimise = slow_minimise
    benchbone.reporting.leaderboard.write_atomic = slow_write_atomic
"""


@pytest.mark.slow
def test_sigint_during_extraction_probe_sweep_and_leaderboard_loses_nothing(tmp_path, monkeypatch, cli):
    plugin, log = write_plugin(tmp_path, "interrupt", INTERRUPT_PLUGIN), tmp_path / "log.txt"
    monkeypatch.setenv("BENCHBONE_TEST_LOG", str(log))
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = ["run", "-p", "benchbone.testing", "-p", str(plugin), "-b", "slow/cnn", "-d", "test/blobs",
            "-s", "linear-probe", "--seeds", "3", "--set", "batch_size=8", "--set", "c_steps=3", "-q"]

    def lines() -> list[str]:
        return log.read_text().splitlines() if log.exists() else []

    def records() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted((out / "records").glob("*.json"))}

    def interrupt_when(ready) -> dict[str, bytes]:
        with open(tmp_path / "stderr.txt", "w") as err:
            # as from a terminal: Ctrl-C's default action, even where pytest itself was started with SIGINT
            # ignored (a background job of a script), which the child would inherit and Python would respect
            proc = subprocess.Popen([sys.executable, "-m", "benchbone.cli", *args, "--out", str(out),
                                     "--cache-dir", str(cache)], stdout=subprocess.DEVNULL, stderr=err,
                                    env={**os.environ, "BENCHBONE_TEST_SLOW": "1", "PYTHONFAULTHANDLER": "1"},
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 120
        while not ready():
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # say where it hangs: the fault handler prints every thread's stack
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=30)
            pytest.fail("the interrupted run did not exit within 60 s:\n" + (tmp_path / "stderr.txt").read_text())
        assert code == 130
        assert (tmp_path / "stderr.txt").read_text() == (
            "benchbone: interrupted; finished cells are kept, run the same command to resume\n")
        assert [p for p in tmp_path.rglob("*.tmp")] == []  # no half-written record, cache file or leaderboard
        return records()

    assert interrupt_when(lambda: "batch" in lines()) == {}  # during feature extraction
    assert list((cache / "features").glob("*.safetensors")) == []

    seen = {}

    def sweeping_after_a_record() -> bool:
        if not records():
            return False
        seen.setdefault("from", len(lines()))
        return "sweep" in lines()[seen["from"]:]

    one = interrupt_when(sweeping_after_a_record)
    assert len(one) in (1, 2)  # during the probe sweep of a later cell: the finished ones are kept
    three = interrupt_when(lambda: "leaderboard" in lines())  # while the leaderboard is written
    assert len(three) == 3 and all(three[name] == text for name, text in one.items())
    assert not (out / "leaderboard.csv").exists()

    result = cli(*args, "--out", out, "--cache-dir", cache)
    assert result.code == 0, result.err
    assert records().keys() == three.keys()
    assert all(kept_as_it_was(text, records()[name]) for name, text in three.items())  # nothing recomputed
    reference = cli(*args, "--out", tmp_path / "whole", "--cache-dir", tmp_path / "cache2")
    assert reference.code == 0
    pd.testing.assert_frame_equal(comparable(pd.read_csv(out / "leaderboard.csv")),
                                  comparable(pd.read_csv(tmp_path / "whole" / "leaderboard.csv")))


def png16(path: Path, rgb: np.ndarray) -> None:
    """A real 16-bit RGB PNG (colour type 2, bit depth 16), which PIL cannot write."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_sixteen_bit_pngs_are_scaled_to_eight_bits_not_clipped(tmp_path):
    from PIL import Image

    from benchbone.errors import UsageError
    from benchbone.inputs.folders import read_image

    gradient = np.linspace(0, 65535, 64 * 64).round().astype(np.uint16).reshape(64, 64)
    Image.fromarray(gradient).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as im:
        assert im.mode == "I;16"  # really 16 bits on disk
    grey = read_image(tmp_path / "grey16.png").numpy()[0]
    np.testing.assert_array_equal(grey, np.rint(gradient / 257.0).astype(np.uint8))  # 65535 -> 255, 0 -> 0
    assert (grey == 255).mean() < 0.01  # not clipped: a 16-bit gradient stays a gradient

    rgb = np.stack([gradient, gradient[::-1], np.full_like(gradient, 32768)], axis=-1)
    png16(tmp_path / "rgb16.png", rgb)
    colour = read_image(tmp_path / "rgb16.png").numpy().transpose(1, 2, 0).astype(int)
    assert np.abs(colour - rgb / 257.0).max() <= 1.0  # PIL keeps the high byte of each 16-bit sample

    Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I").save(tmp_path / "int32.tif")
    with pytest.raises(UsageError, match=r"int32.tif: pixel values 0..70000 of a I image are outside 0..65535"):
        read_image(tmp_path / "int32.tif")


def test_a_truncated_jpeg_streamed_through_workers_is_one_line(tmp_path, monkeypatch, cli):
    from PIL import Image

    import benchbone.inputs.loading

    monkeypatch.setattr(benchbone.inputs.loading, "PARALLEL_FROM", 8)  # worker processes decode this small split
    for split in ("train", "test"):
        for k, name in enumerate(("a", "b")):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(10):
                colour = (60 * k + 5 * i, 90 if split == "train" else 130, 30)  # test images unlike train ones
                Image.new("RGB", (16, 16), colour).save(tmp_path / "data" / split / name / f"{i}.jpg")
    bad = tmp_path / "data" / "train" / "b" / "7.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    result = cli("run", *TINY, "-d", f"imagefolder:{tmp_path / 'data'}", "-s", "knn", "--out", tmp_path / "run")
    assert result.code == 2
    assert result.err.startswith(f"benchbone: error: cannot read image {bad}: ")
    assert result.err.endswith("remove or replace the file\n")
    assert result.err.count("\n") == 1 and "Traceback" not in result.err and "worker" not in result.err


KILLED_WORKER = """
import os, signal
import torch
from benchbone import DatasetSplits, hookimpl


class Killing(torch.utils.data.Dataset):
    \"\"\"16 px images; the first one read in a DataLoader worker has that worker SIGTERMed (once per marker file).\"\"\"

    def __init__(self, n, seed):
        self.labels = [i % 2 for i in range(n)]
        self.images = torch.randint(0, 100, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed),
                                    dtype=torch.uint8)
        self.images[torch.arange(n), torch.tensor(self.labels)] += 150

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        mark = os.environ["BENCHBONE_TEST_MARK"]
        if torch.utils.data.get_worker_info() is not None and not os.path.exists(mark):
            open(mark, "w").close()
            os.kill(os.getpid(), signal.SIGTERM)  # as an out-of-memory killer or an admin would, in the worker only
        return self.images[i], self.labels[i]


@hookimpl
def benchbone_register_datasets(register):
    register("killing/set", lambda data_dir, download: DatasetSplits(Killing(40, 0), Killing(20, 1), ["a", "b"]),
             uses_data_dir=False)
"""


def test_a_data_loading_worker_killed_by_sigterm_fails_its_cell_in_one_line_and_the_rerun_resumes(tmp_path, monkeypatch,
                                                                                                  cli):
    import benchbone.inputs.loading

    monkeypatch.setattr(benchbone.inputs.loading, "PARALLEL_FROM", 8)  # worker processes decode these small splits
    monkeypatch.setenv("BENCHBONE_TEST_MARK", str(tmp_path / "killed"))
    threads = []  # what a thread would print: a queue's feeder thread of the broken DataLoader, shut down late
    monkeypatch.setattr(threading, "excepthook", threads.append)
    args = ["run", *TINY, "-p", write_plugin(tmp_path, "killing", KILLED_WORKER), "-d", "killing/set", "-s", "knn",
            "--out", tmp_path / "run"]
    first = cli(*args)
    gc.collect()
    time.sleep(0.5)
    assert first.code == 1 and (tmp_path / "killed").exists() and "Traceback" not in first.err and not threads
    records = {r["dataset"]: r for r in map(json.loads, map(Path.read_text, (tmp_path / "run" / "records").glob("*.json")))}
    assert records["test/blobs"]["status"] == "ok"
    error = records["killing/set"]["error"]
    assert records["killing/set"]["status"] == "failed" and "\n" not in error
    pid = int(error.split("(pid ")[1].split(")")[0])
    assert error == (f"RuntimeError: a data-loading worker (pid {pid}) was killed by SIGTERM (from outside benchbone: "
                     "an out-of-memory killer, an admin or a job scheduler); finished cells are kept: run the same "
                     "command to redo this one, with more memory or fewer CPUs (one decoding worker per CPU, at most 8) "
                     "if memory ran out")
    assert first.err.count("\n") == 1 and first.err.rstrip().endswith(error)  # the FAILED line: nothing else
    kept = record_path(tmp_path / "run", records["test/blobs"]["cell_id"]).read_bytes()
    again = cli(*args)
    assert again.code == 0, again.err
    assert record_path(tmp_path / "run", records["test/blobs"]["cell_id"]).read_bytes() == kept
    assert json.loads(record_path(tmp_path / "run", records["killing/set"]["cell_id"]).read_text())["status"] == "ok"


def test_class_folders_starting_with_a_dot_are_classes_when_they_hold_images(tmp_path):
    from PIL import Image

    from benchbone.inputs.folders import scan_class_folders

    for name in (".hidden", "plain"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "0.png")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    paths, labels, classes = scan_class_folders(tmp_path)
    assert classes == [".hidden", "plain"] and labels == [0, 1]


def test_a_folder_reached_through_a_symlink_keys_the_caches_as_the_folder_does(tmp_path):
    """The same images through a symlinked path get the same fingerprint (so the same decoded and feature
    cache entries); a touched image gets another."""
    from PIL import Image

    from benchbone.inputs.folders import ImageFiles, scan_class_folders

    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / "data" / name / "0.png")
    (tmp_path / "link").symlink_to(tmp_path / "data")
    direct, linked = (ImageFiles(*scan_class_folders(tmp_path / where)[:2]) for where in ("data", "link"))
    assert str(linked.paths[0]).startswith(str(tmp_path / "link"))
    assert direct.fingerprint() == linked.fingerprint()
    os.utime(tmp_path / "data" / "a" / "0.png", ns=(1, 1))
    assert ImageFiles(*scan_class_folders(tmp_path / "data")[:2]).fingerprint() != direct.fingerprint()


RACE_PLUGIN = '''
from benchbone import hookimpl
from benchbone.records import write_record


@hookimpl
def benchbone_register_strategies(register):
    def finished_elsewhere(backbone, data, ctx):
        """Another run sharing the run directory finishes this cell, then this attempt fails."""
        cell_id, run_dir = ctx.workdir.name, ctx.workdir.parent.parent
        record = {"schema": 1, "cell_id": cell_id, "status": "ok", "dataset": "test/blobs", "seed": 0,
                  "strategy": "race/finished-elsewhere", "backbone": "test/tiny-cnn", "params": {},
                  "metrics": {"top1": 1.0}, "higher_is_better": {"top1": True}}
        write_record(run_dir, record)
        raise RuntimeError("lost the race")

    register("race/finished-elsewhere", finished_elsewhere)
'''


def test_a_failure_never_overwrites_a_record_another_run_finished(tmp_path, cli):
    plugin = write_plugin(tmp_path, "race", RACE_PLUGIN)
    result = cli("run", *TINY, "-p", plugin, "-s", "race/finished-elsewhere", "--out", tmp_path / "run")
    assert result.code == 0, result.err
    (path,) = (tmp_path / "run" / "records").glob("*.json")
    assert json.loads(path.read_text())["metrics"] == {"top1": 1.0}
    assert leftovers(tmp_path / "run") == []


# --- failure isolation ----------------------------------------------------------------------------------------

FAILING_PLUGIN = '''
import torch
from benchbone import Predictions, hookimpl


@hookimpl
def benchbone_register_strategies(register):
    def cuda_oom(backbone, data, ctx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def host_oom(backbone, data, ctx):
        raise MemoryError("cannot allocate 64 GiB")

    def diverges(backbone, data, ctx):
        _, yt = ctx.features("test")
        scores = torch.full((len(yt), ctx.num_classes), float("nan"))
        return Predictions(yt, torch.zeros_like(yt), scores)

    register("fail/cuda-oom", cuda_oom)
    register("fail/host-oom", host_oom)
    register("fail/diverges", diverges)
'''


def test_failing_cells_are_recorded_and_the_others_go_on(tmp_path, cli):
    plugin = write_plugin(tmp_path, "failing", FAILING_PLUGIN)
    args = ["run", *TINY, "-p", plugin, "-s", "fail/cuda-oom", "-s", "fail/host-oom", "-s", "fail/diverges",
            "-s", "linear-probe", "--set", "c_steps=2"]
    result = cli(*args, "--out", tmp_path / "run")
    assert result.code == 1
    board = {row["strategy"]: row for row in json.loads((tmp_path / "run" / "leaderboard.json").read_text())}
    assert {s: row["status"] for s, row in board.items()} == {
        "fail/cuda-oom": "failed", "fail/host-oom": "failed", "fail/diverges": "failed", "linear-probe": "ok"}
    assert board["fail/cuda-oom"]["error"].startswith("OutOfMemoryError: CUDA out of memory")
    assert board["fail/host-oom"]["error"] == "MemoryError: cannot allocate 64 GiB"
    assert "diverged: 192 of its test scores are NaN or infinite" in board["fail/diverges"]["error"]
    assert "failed: OutOfMemoryError" in result.out  # the printed table shows them

    fast = cli(*args, "--out", tmp_path / "fast", "--fail-fast")
    assert fast.code == 1 and fast.err.count("\n") == 1 and "OutOfMemoryError" in fast.err
    assert len(list((tmp_path / "fast" / "records").glob("*.json"))) == 1


# --- bad input ------------------------------------------------------------------------------------------------

BAD_DATA = '''
from benchbone import DatasetSplits, ImageTensorDataset, hookimpl
from benchbone.testing import blobs


@hookimpl
def benchbone_register_datasets(register):
    def one_class(data_dir, download):
        import torch

        images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
        return DatasetSplits(ImageTensorDataset(images, [0] * 4), ImageTensorDataset(images, [0] * 4), ["only"])

    def empty_test(data_dir, download):
        import torch

        data = blobs(data_dir, download)
        empty = ImageTensorDataset(torch.zeros(0, 3, 12, 12, dtype=torch.uint8), [])
        return DatasetSplits(data.train, empty, data.classes)

    register("bad/one-class", one_class)
    register("bad/empty-test", empty_test)
'''

PLUGIN_SOURCES = {
    "bad_data": BAD_DATA,
    "broken": "import benchbone_no_such_module\n",
    "duplicate": "from benchbone import hookimpl\n\n\n@hookimpl\ndef benchbone_register_datasets(register):\n"
                 "    register('test/blobs', lambda data_dir, download: None)\n",
    "traversal": "from benchbone import hookimpl\n\n\n@hookimpl\ndef benchbone_register_datasets(register):\n"
                 "    register('../../escape', lambda data_dir, download: None)\n",
}


@pytest.mark.parametrize("args, message", [
    (["-b", "tiny-cn", "-d", "test/blobs"], "unknown backbone 'tiny-cn'. Did you mean test/tiny-cnn"),
    (["--suite", "{tmp}/bad.toml"], "bad.toml: malformed TOML"),
    (["-b", "test/tiny-cnn", "-d", "test/blobs", "--set", "nonsense=1"], "unknown parameter 'nonsense'"),
    (["-b", "test/tiny-cnn", "-d", "test/blobs", "--set", "c_steps=many"], "--set c_steps='many': expected int"),
    (["-b", "test/tiny-cnn", "-d", "imagefolder:{tmp}/missing"], "imagefolder: {tmp}/missing does not exist"),
    (["-b", "test/tiny-cnn@random", "-b", "test/tiny-cnn", "-d", "test/blobs",
      "--weights", "test/tiny-cnn={tmp}/other-arch.safetensors"], "weights do not fit this backbone"),
    (["-b", "test/tiny-cnn", "-d", "test/blobs", "-p", "{tmp}/broken.py"],
     "plugin '{tmp}/broken.py' failed to import: ModuleNotFoundError"),
    (["-b", "test/tiny-cnn", "-d", "test/blobs", "-p", "{tmp}/duplicate.py"],
     "dataset name 'test/blobs' is registered by both plugin 'benchbone.testing' and plugin 'duplicate'"),
    (["-b", "test/tiny-cnn", "-d", "bad/one-class", "-p", "{tmp}/bad_data.py"], "has 1 class(es)"),
    (["-b", "test/tiny-cnn", "-d", "bad/empty-test", "-p", "{tmp}/bad_data.py"], "has an empty test split"),
    (["-b", "test/tiny-cnn", "-d", "test/blobs", "-p", "{tmp}/traversal.py"], "invalid dataset name '../../escape'"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, cli, args, message):
    from safetensors.torch import save_file

    for name, source in PLUGIN_SOURCES.items():
        write_plugin(tmp_path, name, source)
    (tmp_path / "bad.toml").write_text('backbones = ["test/tiny-cnn"\ndatasets = ["test/blobs"]\n')
    save_file(torch.nn.Linear(8, 4).state_dict(), str(tmp_path / "other-arch.safetensors"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = cli("run", "-p", "benchbone.testing", "-s", "linear-probe", *args, "--out", tmp_path / "out")
    assert result.code == 2
    assert result.err.startswith("benchbone: error: ") and result.err.count("\n") == 1, result.err
    assert message.replace("{tmp}", str(tmp_path)) in result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "out").exists()


# --- security -------------------------------------------------------------------------------------------------

HOSTILE_PLUGIN = '''
from benchbone import DatasetSplits, hookimpl
from benchbone.testing import blobs


@hookimpl
def benchbone_register_datasets(register):
    def hostile(data_dir, download):
        data = blobs(data_dir, download)
        names = ["../../evil", "/tmp/absolute", "..", "a/../../b"]
        return DatasetSplits(data.train, data.test, names, info={"path": "../../../info"})

    register("hostile/blobs", hostile)
'''


def test_hostile_names_write_nothing_outside_the_run_and_cache_directories(tmp_path, monkeypatch, cli):
    plugin = write_plugin(tmp_path, "hostile", HOSTILE_PLUGIN)
    here = tmp_path / "deep" / "down"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    before = {p for p in tmp_path.rglob("*")}
    result = cli("run", *TINY, "-p", plugin, "-d", "hostile/blobs", "-s", "linear-probe", "-s", "finetune",
                 "--set", "finetune.epochs=1", "--set", "c_steps=2", "--out", "out", "--cache-dir", "cache")
    assert result.code == 0, result.err
    bytecode = tmp_path / "__pycache__"  # Python's own cache of the plugin file it imported, not benchbone's
    new = {p for p in tmp_path.rglob("*") if not p.is_relative_to(bytecode)} - before
    assert new and all(p.is_relative_to(here / "out") or p.is_relative_to(here / "cache") for p in new)
    names = {p.name for p in (here / "out" / "records").iterdir()}
    assert all(len(n) == len("0123456789abcdef.json") for n in names)  # files are named by hashes
    record = json.loads(next((here / "out" / "records").iterdir()).read_text())
    assert record["status"] == "ok" and record["data"]["num_classes"] == 4


def test_finetune_checkpoint_is_read_without_running_code(benchbone_pm, run_tiny_benchmark, tmp_path):
    marker = tmp_path / "unpickled"
    cell = expand(GridSpec(["test/tiny-cnn"], ["test/blobs"], ["finetune"], [], 1, {"epochs": 1}),
                  benchbone_pm.registries())[0]
    checkpoint = tmp_path / "run" / "work" / cell.id / "finetune-checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"model": Evil(marker), "epoch": 1}, checkpoint)
    with pytest.warns(UserWarning, match="finetune checkpoint .* is damaged"):
        board = run_tiny_benchmark(strategies=["finetune"], overrides={"epochs": 1})
    assert not marker.exists() and list(board.status) == ["ok"]
    record = json.loads(record_path(tmp_path / "run", cell.id).read_text())
    assert record["strategy_info"]["resumed_from_epoch"] is None


def test_plugins_come_only_from_built_ins_entry_points_and_p(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    for name in ("benchbone_evil", "benchbone_plugins_evil", "conftest_evil"):
        (tmp_path / f"{name}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # importable from the working directory
    monkeypatch.setenv("BENCHBONE_LOAD_PLUGINS", "1")
    monkeypatch.setenv("BENCHBONE_PLUGINS", "benchbone_evil")  # no environment variable adds code
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [])
    pm = get_plugin_manager()
    assert {name for name, _ in pm.list_name_plugin()} == {m.rsplit(".", 1)[-1] for m in DEFAULT_PLUGINS}
    assert not marker.exists()
    get_plugin_manager(extra=[str(tmp_path / "benchbone_evil.py")])  # an explicit -p file is loaded
    assert marker.exists()


def test_weights_files_are_read_without_running_code(tmp_path, cli):
    marker = tmp_path / "unpickled"
    torch.save({"0.weight": Evil(marker)}, tmp_path / "evil.pth")
    result = cli("run", *TINY, "-s", "linear-probe", "--weights", f"test/tiny-cnn={tmp_path / 'evil.pth'}",
                 "--out", tmp_path / "out")
    assert result.code == 2 and "cannot read weights file" in result.err and result.err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cached_torchvision_weights_are_read_without_running_code(tmp_path, monkeypatch):
    import pickle

    from benchbone_plugins.torchvision_backbones import checkpoint_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "unpickled"
    entry = get_plugin_manager(entrypoints=False).registries().backbones.get("tv/resnet18.IMAGENET1K_V1")
    import torchvision

    path = checkpoint_path(torchvision.models.get_model_weights("resnet18")["IMAGENET1K_V1"])
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), path)  # a plain state dict still loads
    assert entry.obj(pretrained=True).num_features == 512
    torch.save({"conv1.weight": Evil(marker)}, path)  # a tampered file in the torch.hub cache
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        entry.obj(pretrained=True)
    assert not marker.exists() and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_every_test_named_in_docs_reliability_exists():
    import ast
    import re

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(R|B|T|tests/\w+\.py)::(test_\w+)", text)
    assert len(named) > 20
    short = {"R": Path(__file__), "B": root / "tests" / "test_bad_inputs.py", "T": root / "tests" / "test_trust.py"}
    for file, test in named:
        path = short.get(file, root / file)
        functions = {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}
        assert test in functions, f"docs/reliability.md names {file}::{test}, which does not exist"
    import fnmatch

    cases = re.findall(r'^\s*(?:Case\(|\()"([\w-]+)"', short["B"].read_text(), re.MULTILINE)
    for case in re.findall(r"`\[([\w*-]+)\]`", text):  # the table's cases named in brackets
        assert fnmatch.filter(cases, case), f"docs/reliability.md names case [{case}], not in test_bad_inputs.py"


def test_output_to_a_pipe_or_device_is_written_through_not_replaced(tmp_path):
    """`-o /dev/null` once replaced the device by a regular file (os.replace); a pipe stands in for it here."""
    import stat
    import threading

    from benchbone.records import write_atomic

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_atomic(fifo, "a,b\n1,2\n")
    reader.join(timeout=10)
    assert received == [b"a,b\n1,2\n"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temporary file beside it
