import json
import sys

import pytest
from conftest import run_subprocess

TINY = ["-p", "benchbone.testing", "-b", "test/tiny-cnn", "-d", "test/blobs", "-s", "linear-probe", "-q"]


def test_help_and_listing_do_not_import_torch():
    code = ("import sys; from benchbone.cli import main; main(['list', 'strategies']); main(['list', 'metrics']);"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("NO-TORCH"), out.stdout + out.stderr
    assert "linear-probe" in out.stdout and "top1" in out.stdout
    helped = run_subprocess("--help")
    assert helped.returncode == 0 and "run" in helped.stdout


def test_list_shows_prefix_entries(cli):
    result = cli("list", "datasets")
    assert result.code == 0 and "imagefolder:VALUE" in result.out


def test_list_with_pattern(cli):
    result = cli("list", "backbones", "tv/*")
    assert result.code == 0
    assert "tv/resnet50.IMAGENET1K_V2" in result.out and "alias tv/resnet50, resnet50" in result.out
    assert "timm/" not in result.out
    assert cli("list", "backbones", "nothing*").code == 2


def test_run_prints_and_writes_the_leaderboard(cli, tmp_path):
    result = cli("run", *TINY, "--out", tmp_path / "r", "--seeds", "2")
    assert result.code == 0, result.err
    assert "test/tiny-cnn" in result.out and "top1" in result.out
    board = json.loads((tmp_path / "r" / "leaderboard.json").read_text())
    assert board[0]["seeds"] == 2
    md = (tmp_path / "r" / "leaderboard.md").read_text()
    assert "benchbone run -p benchbone.testing" in md  # the command beside the table
    again = cli("leaderboard", tmp_path / "r", "--format", "csv")
    assert again.code == 0 and again.out.startswith("rank,dataset,strategy,backbone")


def test_leaderboard_merges_run_directories(cli, tmp_path):
    cli("run", *TINY, "--out", tmp_path / "a")
    cli("run", *TINY[:-3], "-s", "finetune", "--set", "epochs=1", "-q", "--out", tmp_path / "b")
    merged = cli("leaderboard", tmp_path / "a", tmp_path / "b", "-f", "json")
    assert sorted(row["strategy"] for row in json.loads(merged.out)) == ["finetune", "linear-probe"]
    written = cli("leaderboard", tmp_path / "a", "-f", "md", "-o", tmp_path / "lb.md")
    assert written.code == 0 and "| rank" in (tmp_path / "lb.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["run", "-b", "resnet5", "-d", "digits", "-s", "linear-probe"], "unknown backbone 'resnet5'. Did you mean"),
    (["run", "-b", "resnet50", "-d", "digitz", "-s", "linear-probe"], "unknown dataset 'digitz'. Did you mean digits"),
    (["run", "-b", "resnet50", "-d", "digits", "-s", "linear_probe"], "Did you mean linear-probe"),
    (["run", "-b", "resnet50", "-d", "digits", "-s", "linear-probe", "-m", "top"], "unknown metric 'top'"),
    (["run", "-b", "resnet50", "-d", "cifar10", "-s", "linear-probe", "--data-dir", "/nonexistent/x"],
     "data directory /nonexistent/x does not exist"),
    (["run", "-b", "resnet50", "-d", "cifar10", "-s", "linear-probe", "--data-dir", ".", "--no-download"],
     "pass --data-dir DIR holding cifar-10-batches-py/"),
    (["run", "--suite", "missing.toml"], "cannot read suite file missing.toml"),
    (["run", "-b", "resnet50", "-d", "digits", "-s", "linear-probe", "--set", "c_steps=abc"], "--set c_steps"),
    (["run", "-b", "resnet50", "-d", "digits", "-s", "linear-probe", "--seeds", "0"], "--seeds must be at least 1"),
    (["run", "-b", "resnet50", "-d", "digits", "-s", "linear-probe", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "--bogus"], "unrecognized arguments: --bogus"),
    (["leaderboard", "nowhere"], "run directory nowhere does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, tmp_path, args, message):
    result = cli(*args, "--out", tmp_path / "out") if args[0] == "run" else cli(*args)
    assert result.code == 2
    assert message in result.err
    assert result.err.count("\n") == 1 and result.err.startswith("benchbone: error: ")
    assert "Traceback" not in result.err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_canonical_command_offline_fails_clearly(tmp_path):
    """No CIFAR-10 on disk and no network: one line naming --data-dir, exit 2, nothing written.

    Every download goes through a proxy that refuses connections, so the test means the same on a machine with
    internet."""
    refuse = "http://127.0.0.1:9"  # the discard port: nothing listens there
    result = run_subprocess("run", "--backbone", "resnet50", "--dataset", "cifar10", "--strategy", "linear-probe",
                            "--out", str(tmp_path / "out"),
                            env={"BENCHBONE_DATA_DIR": str(tmp_path / "data"), "BENCHBONE_LOAD_PLUGINS": "",
                                 "HTTPS_PROXY": refuse, "HTTP_PROXY": refuse, "https_proxy": refuse,
                                 "http_proxy": refuse, "NO_PROXY": "", "no_proxy": ""})
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("benchbone: error: cifar10: could not download") and "--data-dir" in last
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(cli):
    from benchbone.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        cli("run", "-b", "nope", "-d", "digits", "-s", "linear-probe", "--debug")
