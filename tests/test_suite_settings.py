"""Suites and flags: flags override what a suite says (seeds, out, device, download); unknown keys are errors."""
import pytest

from benchbone.errors import UsageError
from benchbone.planning.grid import GridSpec, expand
from benchbone.planning.suites import SUITE_KEYS, load_suite


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('backbones = ["test/tiny-cnn"]\ndatasets = ["test/blobs"]\nstrategies = ["knn"]\n'
                    'metrics = ["top1"]\nseeds = 3\nout = "runs/s"\ndevice = "cpu"\ndownload = false\n')
    return path


def test_flags_override_a_suites_seeds(suite, benchbone_pm):
    regs = benchbone_pm.registries()
    assert {c.seed for c in expand(load_suite(suite), regs)} == {0, 1, 2}
    assert {c.seed for c in expand(load_suite(suite).merge(GridSpec(seeds=1)), regs)} == {0}  # --seeds 1 wins
    assert {c.seed for c in expand(load_suite(suite).merge(GridSpec()), regs)} == {0, 1, 2}  # no --seeds: the suite's


def test_a_suites_out_device_and_download_are_read(suite, tmp_path, cli, monkeypatch):
    assert load_suite(suite).settings == {"out": str(tmp_path / "runs" / "s"), "device": "cpu", "download": False}
    seen = {}
    import benchbone.execution.harness

    def fake_run_grid(spec, **kwargs):
        seen.update(kwargs, seeds=spec.seeds)
        raise UsageError("stop here")

    monkeypatch.setattr(benchbone.execution.harness, "run_grid", fake_run_grid)
    assert cli("run", "-p", "benchbone.testing", "--suite", suite).code == 2
    assert (seen["out"], seen["device"], seen["download"], seen["seeds"]) == (tmp_path / "runs" / "s", "cpu", False, 3)
    assert cli("run", "-p", "benchbone.testing", "--suite", suite, "--out", tmp_path / "o", "--seeds", "1").code == 2
    assert (seen["out"], seen["seeds"]) == (tmp_path / "o", 1)


def test_unknown_suite_keys_are_an_error_listing_the_known_ones(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('backbones = ["x"]\nseed = 2\n')
    with pytest.raises(UsageError, match=r"typo.toml:2: unknown key 'seed'; suite keys are .*seeds") as info:
        load_suite(path)
    assert all(key in str(info.value) for key in SUITE_KEYS)
