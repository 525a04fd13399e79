"""The ``benchbone`` command. Imports no torch until a command needs it."""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import warnings
from pathlib import Path

from benchbone.allocator import prefer_huge_pages
from benchbone.errors import BenchboneError, UsageError
from benchbone.kinds import PLURALS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from benchbone import formats
    from benchbone.grid import HARNESS_DEFAULTS

    parser = _Parser(prog="benchbone", description="Benchmark pretrained vision backbones: backbone x dataset x strategy.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-p", "--plugin", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="load a plugin from a module name or a .py file (repeatable)")
    common.add_argument("--no-plugin", action="append", default=[], metavar="NAME",
                        help="block a plugin by name, built-in or installed (repeatable)")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", parents=[common], help="run a grid and print its leaderboard",
                         description="Run backbone x dataset x strategy (x seed) and print the leaderboard.")
    run.add_argument("--backbone", "-b", action="append", default=[], metavar="NAME",
                     help="backbone name or pattern; NAME@random for random init (repeatable)")
    run.add_argument("--dataset", "-d", action="append", default=[], metavar="NAME", help="dataset name or pattern")
    run.add_argument("--strategy", "-s", action="append", default=[], metavar="NAME", help="strategy name or pattern")
    run.add_argument("--metric", "-m", action="append", default=[], metavar="NAME",
                     help="metric name or pattern (default: all registered)")
    run.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                     help="load backbone NAME from a local .safetensors/.pth state dict instead of its pretrained "
                          "weights (repeatable)")
    run.add_argument("--seeds", type=int, metavar="N", help="run each cell with seeds 0..N-1 (default: the suite's, else 1)")
    run.add_argument("--suite", metavar="NAME_OR_FILE",
                     help="a built-in suite (quickstart) or a TOML suite file; flags add names to it and override "
                          "its seeds, out, device and download")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="override a parameter: key=value for every strategy (or dataset) that has it, or "
                          "strategy.key=value; the harness's own: " + ", ".join(HARNESS_DEFAULTS))
    run.add_argument("--out", metavar="DIR",
                     help="run directory (default: the suite's out, else benchbone-runs/<suite name or 'default'>)")
    run.add_argument("--data-dir", metavar="DIR", help="where the datasets' files are")
    run.add_argument("--cache-dir", metavar="DIR", help="feature cache (default: $BENCHBONE_CACHE_DIR or ~/.cache/benchbone)")
    run.add_argument("--no-cache", action="store_true",
                     help="neither read nor write the feature and decoded-image caches (features in memory)")
    run.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: the suite's, else picked automatically)")
    run.add_argument("--no-download", action="store_true", help="never download data (a suite may say download = false)")
    run.add_argument("--sort-by", metavar="METRIC", help="rank by this metric (default: the first)")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failed cell")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    run.add_argument("--log-to", action="append", default=[], metavar="KIND:TARGET",
                     help="also log each cell to an experiment tracker: mlflow:FILE.db (a local sqlite store; "
                          "needs benchbone[mlflow]) or tensorboard:DIR (needs benchbone[tensorboard]); "
                          "default $BENCHBONE_LOG_TO, else none (repeatable)")
    _statistics_flags(run)
    _executor_flags(run.add_argument_group("scale-out (see docs/scale-out.md)"))

    cell = sub.add_parser("run-cell", help="run one cell from its spec file (what every executor's worker runs)",
                          description="Run one cell from <run_dir>/specs/<cell id>.json and write its record; "
                                      "under torchrun only rank 0 writes.")
    cell.add_argument("spec", metavar="SPEC.json")
    cell.add_argument("--debug", action="store_true", help="show tracebacks")

    lst = sub.add_parser("list", parents=[common], help="list registered names")
    lst.add_argument("kind", choices=PLURALS)
    lst.add_argument("pattern", nargs="?", help="shell-style pattern, e.g. 'resnet*'")

    plugins = sub.add_parser("plugins", parents=[common], help="list plugins and what failed to load")
    plugins.add_argument("--hook", help="only plugins that implement this hook")

    doctor = sub.add_parser("doctor", parents=[common], help="what to paste into an issue: versions, device, "
                            "extras, cache, data found, downloads",
                            description="Print versions, the device a run would pick, optional extras, the "
                                        "feature cache, the data sets found and whether downloads are possible.")
    doctor.add_argument("--data-dir", metavar="DIR", help="also look for data sets here, as `run --data-dir` would")
    doctor.add_argument("--cache-dir", metavar="DIR", help="the feature cache to describe")

    board = sub.add_parser("leaderboard", parents=[common], help="the leaderboard of one or more run directories")
    board.add_argument("run_dirs", nargs="+", metavar="DIR")
    board.add_argument("--format", "-f", choices=tuple(formats.FORMATS), default="table", help=formats.help_text())
    board.add_argument("--sort-by", metavar="METRIC")
    board.add_argument("--output", "-o", metavar="FILE", help="write here instead of printing")
    board.add_argument("--title", default="benchbone leaderboard", help="the heading of --format md and html")
    board.add_argument("--pivot", metavar="METRIC", help="show METRIC as a backbones x datasets table")
    board.add_argument("--strategy", metavar="NAME", help="the strategy of --pivot and --plot")
    board.add_argument("--plot", metavar="FILE.png",
                       help="also write a PNG of the ranking metric (--sort-by, else the first metric) against GMACs and "
                            "images/s, Pareto front marked")
    board.add_argument("--plot-layers", metavar="FILE.png",
                       help="also write a PNG of the ranking metric per layer of the --set layer rows (BACKBONE#LAYER)")
    board.add_argument("--plot-curve", metavar="PARAM=FILE.png",
                       help="also write a PNG of the ranking metric against a swept parameter, e.g. shots=curve.png")
    board.add_argument("--cd-diagrams", metavar="DIR",
                       help="also write the critical-difference diagrams across datasets, cd-<strategy>.png and "
                            ".svg, into DIR")
    board.add_argument("--robustness", metavar="BASELINE",
                       help="show corruption robustness instead (runs with --set corruption=...): clean and mean "
                            "corrupted ranking metric (--sort-by, else the first), their gap, mCE and relative mCE against "
                            "backbone BASELINE's rows")
    board.add_argument("--expect", metavar="FILE.toml",
                       help="print measured vs expected for the [[expect]] tables of FILE (published numbers, "
                            "see benchmarks/reproduce/); exit 1 when one is missing or outside its tolerance")
    _statistics_flags(board)

    report = sub.add_parser("report", parents=[common], help="a self-contained HTML page of one or more run directories",
                            description="Write the leaderboard of run directories as one HTML page with no "
                                        "external assets: sortable table, plots, per-cell views, provenance.")
    report.add_argument("run_dirs", nargs="+", metavar="DIR")
    report.add_argument("--output", "-o", metavar="FILE", help="default: <first DIR>/report.html")
    report.add_argument("--sort-by", metavar="METRIC")
    report.add_argument("--title", default="benchbone leaderboard")
    _statistics_flags(report)

    compare = sub.add_parser("compare", parents=[common], help="every pair of backbones, paired on the same test items",
                             description="For each dataset x strategy, the difference in the ranking metric between "
                                         "every pair of rows and its Holm-adjusted p-value (paired bootstrap over "
                                         "the same test items; see docs/statistics.md).")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--strategy", "-s", metavar="NAME", help="only this strategy")
    compare.add_argument("--dataset", "-d", metavar="NAME", help="only this dataset")
    compare.add_argument("--sort-by", metavar="METRIC", help="the metric to compare (default: the first metric)")
    compare.add_argument("--format", "-f", choices=("table", "json", "html"), default="table")
    compare.add_argument("--output", "-o", metavar="FILE", help="write here instead of printing")
    _statistics_flags(compare)
    return parser


def _statistics_flags(parser: argparse.ArgumentParser) -> None:
    """--alpha and --ci-method; their defaults live in benchbone.statistics, which --help does not import."""
    parser.add_argument("--alpha", type=float, metavar="A",
                        help="significance level of the paired tests, after Holm's correction (default 0.05)")
    parser.add_argument("--ci-method", metavar="METHOD",
                        help="bootstrap interval of the differences: percentile (default) or basic")


def _statistics_options(args) -> tuple[float, str]:
    from benchbone import statistics

    return (statistics.ALPHA if args.alpha is None else args.alpha,
            args.ci_method or statistics.CI_METHODS[0])


def _manager(args, log_to=(), needs: tuple[str, ...] = ()):
    """The plugin manager of this command; a plugin that failed to load is one warning line when the command
    needs plugins of some kind (``needs``: plurals, e.g. ("metrics",))."""
    from benchbone.plugins import get_plugin_manager, warn_load_problems

    pm = get_plugin_manager(blocked=args.no_plugin, extra=args.plugin, log_to=log_to)
    if needs:
        warn_load_problems(pm, needs)
    return pm


def cmd_list(args) -> int:
    import fnmatch

    from benchbone.names_index import rows
    from benchbone.plugins import say_load_problems

    pm = _manager(args)
    found = rows(pm, args.kind)  # from the index, or a filled registry: either way every failure is known now
    say_load_problems(pm)
    listed = [row for row in found
              if args.pattern is None  # aliases too: `benchbone list backbones resnet50`
              or any(fnmatch.fnmatchcase(n, args.pattern) for n in (row["name"], *row["aliases"]))]
    if args.pattern and not listed:
        raise UsageError(f"no {args.kind} match {args.pattern!r}; try `benchbone list {args.kind}`")
    for row in listed:
        print(row["line"])
    return 0


def cmd_plugins(args) -> int:
    pm = _manager(args)
    registries = pm.registries()
    for kind in PLURALS:  # run every registration hook, so that failing ones are reported below
        registries.kind(kind)
    for name, plugin in sorted(pm.list_name_plugin()):
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        if args.hook and args.hook not in hooks:
            continue
        print(f"{name} {pm.versions.get(name, '')}: {', '.join(hooks)}")
    for name, problem in sorted(pm.problems.items()):
        print(f"{name}: FAILED to load: {problem}")
    return 1 if pm.problems else 0


def cmd_run(args) -> int:
    from benchbone.grid import GridSpec, load_suite, parse_overrides, parse_weights

    spec = GridSpec(args.backbone, args.dataset, args.strategy, args.metric, args.seeds,
                    parse_overrides(args.overrides), args.data_dir, parse_weights(args.weights))
    name = "default"
    if args.suite:
        spec = load_suite(args.suite).merge(spec)
        name = Path(args.suite).stem.strip(".") or "default"  # "...toml" must not name benchbone-runs/..
    if spec.seed_count < 1:
        raise UsageError(f"--seeds must be at least 1, not {spec.seeds}")
    if args.no_cache and args.cache_dir:
        raise UsageError("--no-cache runs without a cache: pass it or --cache-dir, not both")
    from benchbone.harness import run_grid
    from benchbone.plugins import log_targets

    board = run_grid(
        spec, out=Path(args.out or spec.settings.get("out") or Path("benchbone-runs") / name),
        pm=_manager(args, log_to=log_targets(args.log_to)), device=args.device or spec.settings.get("device"),
        cache_dir="" if args.no_cache else args.cache_dir, download=not args.no_download and spec.settings.get("download", True), quiet=args.quiet,
        fail_fast=args.fail_fast, sort_by=args.sort_by, command=_command_line(args.argv),
        executor=args.executor, executor_options=_executor_options(args),
        **dict(zip(("alpha", "ci_method"), _statistics_options(args))),
    )
    return 1 if (board["status"] != "ok").any() else 0


def _executor_flags(group) -> None:
    """--executor and each option that an executor declares (``benchbone.executors``), as the executor says."""
    from benchbone import executors

    group.add_argument("--executor", choices=tuple(executors.EXECUTORS), default="local",
                       help="who runs the cells: " + "; ".join(f"{name}: {e.help}"
                                                                for name, e in executors.EXECUTORS.items()))
    for option, owners in executors.options().values():
        where = f" [--executor {' or '.join(owners)}]"
        if option.pairs:
            group.add_argument(option.cli_flag, dest=option.name, action="append", default=[], metavar=option.metavar,
                               help=option.help + where)
        else:
            group.add_argument(option.cli_flag, dest=option.name, type=option.type, metavar=option.metavar,
                               help=option.help + where)


def _executor_options(args) -> dict:
    """What the executor flags gave, by option name (None: not given; KEY=VALUE flags as a dict or None)."""
    from benchbone.executors import options
    from benchbone.grid import parse_value

    given = {}
    for name, (option, _) in options().items():
        value = getattr(args, name)
        if option.pairs:
            pairs = {}
            for item in value:
                key, sep, text = item.partition("=")
                if not sep or not key.strip():
                    raise UsageError(f"{option.cli_flag} {item!r} is not KEY=VALUE; write e.g. {option.cli_flag} account=abc")
                pairs[key.strip().replace("-", "_")] = parse_value(text)
            value = pairs or None
        given[name] = value
    return given


def cmd_run_cell(args) -> int:
    from benchbone.executors import run_spec_file

    record = run_spec_file(args.spec)
    if int(os.environ.get("RANK", "0")) == 0:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items()) or record.get("error", "")
        print(f"benchbone: {record['status']} {record['backbone']} x {record['dataset']} x {record['strategy']} "
              f"(seed {record['seed']}): {shown}", file=sys.stderr)
    return 0 if record["status"] == "ok" else 1


def _command_line(argv: list[str]) -> str:
    return " ".join(["benchbone", *map(shlex.quote, argv)])


def cmd_leaderboard(args) -> int:
    from benchbone import formats, leaderboard
    from benchbone.records import check_output_file, read_records, write_atomic

    _manager(args, needs=("metrics",))  # the metrics' directions and paired tests come from their plugins
    for flag, path in (("-o", args.output), ("--plot", args.plot)):
        if path:
            check_output_file(Path(path), flag)
    records = read_records([Path(d) for d in args.run_dirs])
    if args.strategy and not (args.pivot or args.plot):
        raise UsageError("--strategy chooses the strategy of --pivot or --plot; pass one of them too")
    if args.robustness:
        from benchbone import robustness

        if args.format == "html" or args.pivot or args.expect:
            raise UsageError("--robustness prints its own table; drop --format html, --pivot and --expect")
        metric = args.sort_by or leaderboard.ranking_metric(records)
        text = robustness.to_text(robustness.table(records, args.robustness, metric), args.format)
        if args.format == "md":  # how the records were produced, as every markdown page says
            text = "\n".join([text, "", *leaderboard.provenance(records)])
        _emit(text, args.output)
        return 0
    board = _board(args, records)
    if args.plot:
        if not args.plot.lower().endswith(".png"):
            raise UsageError(f"--plot {args.plot!r}: give a file name ending in .png")
        leaderboard.plot(board, Path(args.plot), metric=board.attrs["sort_by"], strategy=args.strategy)
        print(f"benchbone: wrote {args.plot}", file=sys.stderr)
    if args.plot_layers:
        from benchbone.plots import layer_curve_png

        if not args.plot_layers.lower().endswith(".png") or not board["backbone"].str.contains("#").any():
            raise UsageError(f"--plot-layers {args.plot_layers!r}: give a .png file name, for runs with --set layer")
        write_atomic(Path(args.plot_layers), layer_curve_png(board, board.attrs["sort_by"], args.title))
        print(f"benchbone: wrote {args.plot_layers}", file=sys.stderr)
    if args.plot_curve:
        import json

        from benchbone.plots import param_curve_png

        param, _, file = args.plot_curve.partition("=")
        if not file.lower().endswith(".png") or not any(param in json.loads(p) for p in board["params"]):
            raise UsageError(f"--plot-curve {args.plot_curve!r}: give PARAM=FILE.png with a parameter of these rows, "
                             "e.g. shots=curve.png")
        write_atomic(Path(file), param_curve_png(board, board.attrs["sort_by"], param, args.title))
        print(f"benchbone: wrote {file}", file=sys.stderr)
    if args.cd_diagrams:
        from benchbone import statistics

        written = statistics.write_cd_diagrams(leaderboard.rankings(board), Path(args.cd_diagrams))
        if not written:
            raise UsageError("--cd-diagrams: no strategy is scored by 3 or more backbones on 2 or more datasets here")
        print(f"benchbone: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    if args.pivot and not formats.FORMATS[args.format].page:
        text = leaderboard.pivot_text(leaderboard.pivot(board, args.pivot, args.strategy), args.format)
        if args.format == "md":
            text = "\n".join([text, "", *leaderboard.provenance(records)])
    else:
        text = formats.render(args.format, board, records, args.run_dirs, title=args.title)
    status = 0
    if args.expect:
        from benchbone import expect

        checked = expect.check(board, expect.load(args.expect))
        text = "\n\n".join([text, f"Measured vs expected ({args.expect}):", expect.to_text(checked, args.format)])
        status = 0 if checked["within"].all() else 1
    _emit(text, args.output)
    return status


def _board(args, records):
    """The leaderboard of ``records`` with the paired tests the flags ask for."""
    from benchbone import leaderboard

    alpha, ci_method = _statistics_options(args)
    return leaderboard.build(records, sort_by=args.sort_by, run_dirs=[Path(d) for d in args.run_dirs],
                             metric_registry=_manager(args).registries().metrics, alpha=alpha, ci_method=ci_method)


def _emit(text: str, output: str | None) -> None:
    from benchbone.records import write_atomic

    if output:
        write_atomic(Path(output), text if text.endswith("\n") else text + "\n")
    else:
        print(text)


def cmd_compare(args) -> int:
    from benchbone import compare
    from benchbone.records import read_records

    records = read_records([Path(d) for d in args.run_dirs])
    _manager(args, needs=("metrics",))
    board = _board(args, records)
    groups = compare.compare(board, records, [Path(d) for d in args.run_dirs], _manager(args).registries().metrics,
                             strategy=args.strategy, dataset=args.dataset)
    _emit(compare.to_text(groups, *_statistics_options(args), args.format), args.output)
    return 0


@contextlib.contextmanager
def _one_line_warnings():
    """Warnings of benchbone and its built-in plugins (a damaged cache file or record) as one line each on stderr."""
    import importlib.util

    plugins = importlib.util.find_spec("benchbone_plugins")
    own = (str(Path(__file__).parent), *(plugins.submodule_search_locations or () if plugins else ()))
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if str(filename).startswith(own):
            print(f"benchbone: warning: {message}", file=file or sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def cmd_doctor(args) -> int:
    from benchbone.doctor import lines

    for line in lines(_manager(args), data_dir=args.data_dir, cache_dir=args.cache_dir):
        print(line, flush=True)
    return 0


def cmd_report(args) -> int:
    from benchbone import report

    _manager(args, needs=("metrics",))
    path = report.write([Path(d) for d in args.run_dirs], args.output, sort_by=args.sort_by, title=args.title,
                        metric_registry=_manager(args).registries().metrics, statistics=_statistics_options(args))
    print(f"benchbone: wrote {path}", file=sys.stderr)
    return 0


COMMANDS = {"run": cmd_run, "run-cell": cmd_run_cell, "list": cmd_list, "plugins": cmd_plugins,
            "leaderboard": cmd_leaderboard, "report": cmd_report, "doctor": cmd_doctor, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    prefer_huge_pages()  # before anything imports torch
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or bool(os.environ.get("BENCHBONE_DEBUG"))
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(argv if argv is not None else sys.argv[1:])
        if args.version:
            from benchbone.plugins import _benchbone_version

            print(f"benchbone {_benchbone_version()}")
            return 0
        if not args.command:
            build_parser().print_help()
            return 2
        with contextlib.nullcontext() if debug else _one_line_warnings():
            return COMMANDS[args.command](args)
    except UsageError as exc:
        if debug:
            raise
        print(f"benchbone: error: {exc}", file=sys.stderr)
        return 2
    except BenchboneError as exc:
        if debug:
            raise
        print(f"benchbone: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `benchbone list backbones | head`
        return 0
    except KeyboardInterrupt:
        print("benchbone: interrupted; finished cells are kept, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
