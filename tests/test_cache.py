"""The feature cache on disk: rows streamed in chunks to an .npy, read back as a memory map, every check kept."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from benchbone.inputs.extraction import ExtractionSettings, extract
from benchbone.inputs.feature_cache import FeatureStore, RowsFile, feature_key, full_key

TINY = ["-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-q"]
DESCRIPTION = {"backbone": "projection", "split": "train"}


def projection(dim: int) -> torch.nn.Module:
    """A fixed random projection of 3x8x8 images to ``dim`` features: a fake backbone as wide as a real one."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, dim))


def batches(n: int, size: int):
    images = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return [(images[i:i + size], None) for i in range(0, n, size)]


def streamed(store: FeatureStore, model, n: int, dim: int, batch: int, description=DESCRIPTION) -> dict:
    def compute(rows):
        extract(model, batches(n, batch), dim, n, ExtractionSettings("cpu", batch), rows=rows)
        return {"labels": torch.arange(n)}

    return store.get_or_compute(description, compute, (n, dim))


def test_features_extracted_in_chunks_equal_the_in_memory_extraction_exactly(tmp_path):
    model = projection(48)
    whole, _ = extract(model, batches(300, 32), 48, 300, ExtractionSettings("cpu", 32))  # the same batch boundaries
    store = FeatureStore(tmp_path)
    first = streamed(store, model, 300, 48, 32)  # ten chunks, the last one short
    again = FeatureStore(tmp_path).load(feature_key(DESCRIPTION), DESCRIPTION)  # another process's view
    for features in (first["features"], again["features"]):
        assert features.dtype == torch.float32 and torch.equal(features, whole)
    assert isinstance(np.load(tmp_path / "features" / f"{feature_key(DESCRIPTION)}.npy", mmap_mode="r"), np.memmap)
    assert sorted(p.name for p in (tmp_path / "features").iterdir()) == sorted(
        f"{feature_key(DESCRIPTION)}{suffix}" for suffix in (".npy", ".safetensors", ".safetensors.lock"))


def test_a_strategy_writing_into_its_features_changes_neither_the_file_nor_the_next_reader(tmp_path):
    store = FeatureStore(tmp_path)
    key = feature_key(DESCRIPTION)
    kept = streamed(store, projection(16), 40, 16, 8)["features"].clone()
    mine = store.reopen(key)
    mine.mul_(0)  # in place, as a strategy that centres its features might
    assert torch.equal(store.reopen(key), kept)
    assert torch.equal(FeatureStore(tmp_path).load(key, DESCRIPTION)["features"], kept)


PEAK = """
import re, sys, torch
sys.path.insert(0, {tests!r})
from test_cache import projection, streamed
from benchbone.inputs.feature_cache import FeatureStore
from benchbone.inputs.extraction import ExtractionSettings, extract
from test_cache import batches

n, dim, batch = 4000, 4096, 250
model = projection(dim)
extract(model, batches(batch, batch), dim, batch, ExtractionSettings("cpu", batch))  # warm: allocator, kernels


def status(field):
    return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the resident size now, not from the imports' peak
before = status("VmRSS")
if sys.argv[1] == "cache":
    streamed(FeatureStore(sys.argv[2]), model, n, dim, batch)
else:
    extract(model, batches(n, batch), dim, n, ExtractionSettings("cpu", batch))
print(status("VmHWM") - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (VmHWM)")
def test_peak_memory_of_a_streamed_extraction_is_one_chunk_not_the_array(tmp_path):
    """4,000 x 4,096 float32 features (62.5 MiB) in chunks of 250 rows (4 MiB): peak RSS grows by under half
    than the array, where the in-memory extraction grows by about the array (measured in fresh processes)."""
    script = PEAK.format(tests=os.path.dirname(__file__))
    full = 4000 * 4096 * 4

    def grows(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", script, mode, str(tmp_path / mode)], capture_output=True,
                             text=True, check=True)
        return int(out.stdout.split()[-1])

    streaming, in_memory = grows("cache"), grows("memory")
    assert streaming < full / 2, (streaming, full)  # 13 MiB alone, 21 MiB once measured inside the full suite
    assert in_memory > 0.75 * full, (in_memory, full)  # the measurement sees an array of this size


KILLED = """
import sys, time, torch
from benchbone.inputs.feature_cache import FeatureStore

def compute(rows):
    for i in range(100):
        rows.write(torch.full((10, 32), float(i)))
        if i == 3:
            print("written", flush=True)
            time.sleep(60)
    return {{"labels": torch.zeros(1000, dtype=torch.long)}}

FeatureStore(sys.argv[1]).get_or_compute({description!r}, compute, (1000, 32))
"""


def test_a_writer_killed_mid_write_leaves_no_readable_partial_file(tmp_path):
    from benchbone.records import remove_stale_tmp

    writer = subprocess.Popen([sys.executable, "-c", KILLED.format(description=DESCRIPTION), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "written\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    folder, key = tmp_path / "features", feature_key(DESCRIPTION)
    left = sorted(p.name for p in folder.iterdir())
    assert not (folder / f"{key}.npy").exists() and not (folder / f"{key}.safetensors").exists()
    assert [name for name in left if name.endswith(".tmp")] == [name for name in left if not name.endswith(".lock")]
    assert len([name for name in left if name.endswith(".tmp")]) == 1  # the partial rows, under a temporary name
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a damaged entry: there is none
        assert FeatureStore(tmp_path).load(key, DESCRIPTION) is None
    remove_stale_tmp(folder)  # what the next run does: its writer is dead
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".lock")] == []
    entry = streamed(FeatureStore(tmp_path), projection(32), 20, 32, 8)  # and the entry is computed whole
    assert entry["features"].shape == (20, 32)


def old_format(store: FeatureStore, description: dict) -> None:
    """An entry as benchbone wrote it before rows went to .npy files: everything in one safetensors file."""
    from safetensors.torch import save_file

    from benchbone.inputs.feature_cache import _digest

    tensors = {"features": torch.ones(20, 32), "labels": torch.arange(20)}
    store.path(feature_key(description)).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(store.path(feature_key(description))),
              metadata={"sha256": _digest(tensors, full_key(description)), "key": full_key(description)})


def flip_rows(store: FeatureStore, key: str) -> None:
    path = store.rows_path(key)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # one number changed, size and header kept
    path.write_bytes(bytes(data))


DAMAGE = {
    "old-format": (old_format, "written by an older benchbone"),
    "rows-flipped": (lambda store, d: flip_rows(store, feature_key(d)), "digest mismatch in its rows file"),
    "rows-missing": (lambda store, d: store.rows_path(feature_key(d)).unlink(), "missing or unreadable"),
    "rows-truncated": (lambda store, d: store.rows_path(feature_key(d)).write_bytes(
        store.rows_path(feature_key(d)).read_bytes()[:1000]), "missing or unreadable"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_an_old_or_damaged_entry_is_reported_once_and_recomputed(damage, tmp_path):
    spoil, says = DAMAGE[damage]
    model = projection(32)
    if damage != "old-format":
        streamed(FeatureStore(tmp_path), model, 20, 32, 8)
    spoil(FeatureStore(tmp_path), DESCRIPTION)
    with pytest.warns(UserWarning) as caught:
        entry = streamed(FeatureStore(tmp_path), model, 20, 32, 8)
    assert len(caught) == 1 and "is damaged" in str(caught[0].message) and says in str(caught[0].message)
    whole, _ = extract(model, batches(20, 8), 32, 20, ExtractionSettings("cpu", 8))  # the same batch boundaries
    assert torch.equal(entry["features"], whole)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(FeatureStore(tmp_path).load(feature_key(DESCRIPTION), DESCRIPTION)["features"], whole)


def test_a_disk_that_fills_mid_write_is_one_line_the_same_numbers_and_nothing_left(tmp_path, monkeypatch):
    from benchbone.inputs import feature_cache as features

    model = projection(32)
    whole, _ = extract(model, batches(40, 8), 32, 40, ExtractionSettings("cpu", 8))  # the same batch boundaries
    written = []
    write = RowsFile.write

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    def fills_up(self, rows):
        if len(written) == 2 and self.memory is None:  # the third chunk does not fit
            self._file.close()
            self._file = Full()
        written.append(len(rows))
        write(self, rows)

    monkeypatch.setattr(features, "_WARNED", set())
    monkeypatch.setattr(RowsFile, "write", fills_up)
    with pytest.warns(UserWarning) as caught:
        entry = streamed(FeatureStore(tmp_path), model, 40, 32, 8)
    (line,) = [str(w.message) for w in caught]
    assert "cannot be written (No space left on device; " in line and "--no-cache" in line
    assert torch.equal(entry["features"], whole)
    assert [p.name for p in (tmp_path / "features").iterdir() if not p.name.endswith(".lock")] == []


def test_no_cache_reads_and_writes_no_cache_and_gives_the_same_numbers(tmp_path, monkeypatch, cli):
    cache = tmp_path / "default-cache"
    monkeypatch.setenv("BENCHBONE_CACHE_DIR", str(cache))
    args = ["run", *TINY, "-s", "knn"]
    assert cli(*args, "--out", tmp_path / "cached").code == 0
    entries = sorted(cache.rglob("*"))
    (cache / "features").rename(tmp_path / "moved")  # a cached run's files, out of the way
    (cache / "features").mkdir()
    for path in (tmp_path / "moved").glob("*.safetensors"):  # a cache that would be read if it were consulted
        (cache / "features" / path.name).write_bytes(b"damaged")
    result = cli(*args, "--no-cache", "--out", tmp_path / "uncached")
    assert result.code == 0 and result.err == ""  # the damaged files were never read
    assert sorted(p.name for p in (cache / "features").iterdir()) == sorted(
        p.name for p in (tmp_path / "moved").glob("*.safetensors"))  # nor written
    (record,) = (tmp_path / "uncached" / "records").glob("*.json")
    extraction = json.loads(record.read_text())["features"]
    assert not extraction["train"]["cached"] and not extraction["test"]["cached"]  # val: train's rows, in memory
    boards = [pd.read_csv(tmp_path / run / "leaderboard.csv")[["backbone", "top1"]] for run in ("cached", "uncached")]
    pd.testing.assert_frame_equal(*boards)
    assert entries


def test_no_cache_with_a_cache_dir_is_a_usage_error(tmp_path, cli):
    result = cli("run", *TINY, "-s", "knn", "--no-cache", "--cache-dir", tmp_path / "c", "--out", tmp_path / "r")
    assert result.code == 2 and "--no-cache" in result.err and result.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_cache_line_names_no_cache(tmp_path, cli):
    (tmp_path / "file").write_text("not a directory")
    result = cli("run", *TINY, "-s", "knn", "--cache-dir", tmp_path / "file", "--out", tmp_path / "r")
    assert result.code == 0
    (line,) = [line for line in result.err.splitlines() if "cache directory" in line]
    assert "running without caching" in line and "--no-cache" in line


def test_the_python_api_runs_without_a_cache(tmp_path, monkeypatch):
    import benchbone

    monkeypatch.setenv("BENCHBONE_CACHE_DIR", str(tmp_path / "cache"))
    board = benchbone.run("test/tiny-cnn", "test/blobs", "knn", plugins=["benchbone.testing"], out=tmp_path / "r",
                          cache=False)
    assert list(board.status) == ["ok"] and not (tmp_path / "cache").exists()


def test_shard_spec_of_a_run_without_cache_keeps_it_off(tmp_path, cli):
    assert cli("run", *TINY, "-s", "knn", "--no-cache", "--executor", "specs", "--out", tmp_path / "r").code == 0
    (spec,) = (tmp_path / "r" / "specs").glob("*.json")
    assert json.loads(spec.read_text())["cache_dir"] == ""



def test_a_backbones_efficiency_is_measured_once_per_cache(run_tiny_benchmark, tmp_path, monkeypatch):
    import benchbone.execution.efficiency

    first = run_tiny_benchmark(strategies=["knn"], out=tmp_path / "a")
    assert len(list((tmp_path / "cache" / "efficiency").glob("*.json"))) == 1

    def measured_again(*args):
        raise AssertionError("GMACs counted again although the cache holds them")

    monkeypatch.setattr(benchbone.execution.efficiency, "describe", measured_again)
    again = run_tiny_benchmark(strategies=["knn"], out=tmp_path / "b")
    assert list(again.status) == ["ok"]
    assert (again[["params_m", "gmacs"]].to_dict() == first[["params_m", "gmacs"]].to_dict())
    (path,) = (tmp_path / "cache" / "efficiency").glob("*.json")
    path.write_text("{damaged")  # measured again, not trusted
    monkeypatch.undo()
    assert list(run_tiny_benchmark(strategies=["knn"], out=tmp_path / "c").status) == ["ok"]
