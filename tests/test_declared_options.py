"""Executors and output formats declare their own options; the CLI is built from those declarations."""
import pytest

from benchbone.cli import build_parser
from benchbone.errors import UsageError
from benchbone.execution import executors
from benchbone.reporting import formats


def subparser(name):
    return build_parser()._subparsers._group_actions[0].choices[name]


def test_every_declared_executor_option_is_a_flag_of_run_and_nothing_else_is():
    run = subparser("run")
    flags = {flag for action in run._actions for flag in action.option_strings}
    declared = executors.options()
    assert {option.cli_flag for option, _ in declared.values()} <= flags
    executor = next(a for a in run._actions if a.dest == "executor")
    assert executor.choices == tuple(executors.EXECUTORS) == ("local", "submitit", "ray", "specs")
    assert declared["ray_address"][1] == ["ray"] and declared["gpus_per_cell"][1] == ["submitit", "ray", "specs"]


def test_declared_limits_and_owners_are_checked():
    with pytest.raises(UsageError, match="--slurm-time 0: give a whole number >= 1"):
        executors.get("submitit", {"slurm_time": 0})
    with pytest.raises(UsageError, match="--cpus-per-cell applies to --executor submitit or ray or specs, not local"):
        executors.get("local", {"cpus_per_cell": 2})
    with pytest.raises(UsageError, match="--slurm-cluster 'moon': use one of auto, slurm, local, debug"):
        executors.get("submitit", {"slurm_cluster": "moon"})


def test_leaderboard_formats_come_from_their_registry():
    fmt = next(a for a in subparser("leaderboard")._actions if a.dest == "format")
    assert fmt.choices == tuple(formats.FORMATS) and "html: a self-contained page" in fmt.help
    assert formats.FORMATS["md"].options == ("title",) and formats.FORMATS["html"].page
