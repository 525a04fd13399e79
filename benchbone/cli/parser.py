"""The ``benchbone`` command line's parser: every subcommand and flag. Imports nothing heavy."""
from __future__ import annotations

import argparse

from benchbone.errors import UsageError
from benchbone.kinds import PLURALS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    from benchbone.planning.grid import CONDITION_KEYS, HARNESS_DEFAULTS
    from benchbone.reporting import formats

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
                          "strategy.key=value; the harness's own: " + ", ".join(HARNESS_DEFAULTS)
                          + "; and rows of their own: " + ", ".join(f"{k} ({v})" for k, v in CONDITION_KEYS.items()))
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
    run.add_argument("-q", "--quiet", action="store_true",
                     help="no progress: no bars, no line per cell; failed cells, warnings and the leaderboard stay")
    run.add_argument("--progress", choices=("auto", "plain", "json"), default="auto",
                     help="what stderr shows as cells run: auto (a line as each cell starts and ends, with a counter "
                          "and the time left; per-batch bars too when stderr is a terminal), plain (the lines, never "
                          "bars) or json (one JSON event per line: run_started, cell_started, cell_finished, "
                          "cell_failed, cell_cached, warning, run_finished)")
    run.add_argument("--log-to", action="append", default=[], metavar="KIND:TARGET",
                     help="also log each cell to an experiment tracker: mlflow:FILE.db (a local sqlite store; "
                          "needs benchbone[mlflow]) tensorboard:DIR (needs benchbone[tensorboard]) or "
                          "wandb:[ENTITY/]PROJECT (needs benchbone[wandb]); "
                          "default $BENCHBONE_LOG_TO, else none (repeatable)")
    _statistics_flags(run)
    _executor_flags(run.add_argument_group("scale-out (see docs/scale-out.md)"))

    _select_parser(sub, common)

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

    report = sub.add_parser("report", parents=[common],
                            help="a self-contained HTML page of run directories and `benchbone select` outputs",
                            description="Write the leaderboard of run directories, and the answer of `benchbone "
                                        "select` output directories (their select.json), as one HTML page with no "
                                        "external assets: sortable tables, plots, per-cell views, provenance.")
    report.add_argument("run_dirs", nargs="+", metavar="DIR", help="a run directory or a `benchbone select --out`")
    report.add_argument("--output", "-o", metavar="FILE", help="default: <first DIR>/report.html")
    report.add_argument("--sort-by", metavar="METRIC", help="rank by this metric (default: the first)")
    report.add_argument("--title", help="the page's heading (default: benchbone leaderboard; benchbone select for "
                                        "select outputs alone)")
    _statistics_flags(report)

    compare = sub.add_parser("compare", parents=[common], help="every pair of backbones, paired on the same test items",
                             description="For each dataset x strategy, the difference in the ranking metric between "
                                         "every pair of rows and its Holm-adjusted p-value (paired bootstrap over "
                                         "the same test items; see docs/statistics.md).")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--strategy", "-s", metavar="NAME", help="only this strategy")
    compare.add_argument("--dataset", "-d", metavar="NAME", help="only this dataset")
    compare.add_argument("--sort-by", metavar="METRIC", help="the metric to compare (default: the first metric)")
    compare.add_argument("--format", "-f", choices=formats.OFFERED["compare"], default="table")
    compare.add_argument("--output", "-o", metavar="FILE", help="write here instead of printing")
    _statistics_flags(compare)
    return parser


def _select_parser(sub, common) -> None:
    """``benchbone select``: its own flags and those of ``run`` that apply."""
    from benchbone.reporting import formats
    from benchbone.planning.grid import HARNESS_DEFAULTS
    from benchbone.selection.defaults import DEFAULTS

    sel = sub.add_parser("select", parents=[common], help="choose a backbone for one dataset under a budget",
                         description="Screen candidate backbones cheaply, evaluate the promising ones exactly on "
                                     "growing subsamples, and stop when one is within --epsilon of the best with "
                                     "--confidence, or the --budget is spent (docs/select.md).")
    sel.add_argument("--dataset", "-d", required=True, metavar="NAME", help="the dataset to choose for")
    sel.add_argument("--backbone", "-b", action="append", default=[], required=True, metavar="NAME",
                     help="candidate backbone, name or pattern; NAME@random for random init (repeatable)")
    sel.add_argument("--max-latency-ms", type=float, metavar="MS",
                     help="drop candidates slower than this at batch 1 on --device (measured)")
    sel.add_argument("--max-params", metavar="N", help="drop candidates with more parameters, e.g. 30M (counted)")
    sel.add_argument("--max-gmacs", type=float, metavar="G", help="drop candidates above this many GMACs an image (counted)")
    sel.add_argument("--budget", metavar="TIME", help="device time for the screen, the rounds and the test: 90s, 15m, 2h "
                                                     "(default: none; stop on the answer or at the whole pool)")
    sel.add_argument("--epsilon", type=float, default=DEFAULTS["epsilon"], metavar="POINTS",
                     help="the chosen backbone is within this many points of the best (default %(default)g)")
    sel.add_argument("--confidence", type=float, default=DEFAULTS["confidence"], metavar="P",
                     help="of the statement (default %(default)g)")
    sel.add_argument("--margin", type=float, default=DEFAULTS["margin"], metavar="POINTS",
                     help="a candidate is dropped when worse than the leader by more than this with confidence "
                          "(default %(default)g: fewer wrong drops where learning curves cross)")
    sel.add_argument("--taper", type=float, default=DEFAULTS["taper"], metavar="GAMMA",
                     help="the margin shrinks with the gain still to come on a learning curve n^-GAMMA, to none at "
                          "the whole pool (default %(default)g; 0: the same margin in every round)")
    sel.add_argument("--full-validation", action="store_true",
                     help=f"score every round on all validation items (default: round r on the first "
                          f"{DEFAULTS['val_per_train']} n_r of them, n_r its training images, all at the last round: "
                          "the early rounds cost less)")
    sel.add_argument("--claim-from", type=float, default=DEFAULTS["claim_from"], metavar="N",
                     help="no within-epsilon claim below this training size: a fraction of the pool (<= 1) or a "
                          "number of images (default %(default)g)")
    sel.add_argument("--strategy", "-s", default="linear-probe", metavar="NAME",
                     help="the exact evaluation: linear-probe (default; C chosen on a carve of the training "
                          "subsample, or --set C=VALUE), knn, or any registered strategy (finetune, head-sgd, ...), "
                          "its val split a carve of the training subsample (docs/select.md)")
    sel.add_argument("--estimator", action="append", default=[], metavar="NAME",
                     help="screen with these estimators (default: all; nce and leep only where a backbone keeps its "
                          "source classifier; see `benchbone list estimators`; repeatable)")
    sel.add_argument("--screen-by", default=DEFAULTS["screen_by"], metavar="NAME",
                     help="the estimator whose order makes the first cut (default %(default)s)")
    sel.add_argument("--keep", type=float, metavar="K",
                     help="candidates the screen keeps: a number, or a fraction (< 1; default: a quarter, at least 2), "
                          "plus the static prior's top pick")
    sel.add_argument("--screen-size", type=int, metavar="N",
                     help="images of the screen's subsample and of the first round (default 20 per class, at least 200)")
    sel.add_argument("--format", "-f", choices=formats.OFFERED["select"], default="table",
                     help="how the answer is printed (select.json and select.md are written either way)")
    sel.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                     help="load backbone NAME from a local state dict (repeatable)")
    sel.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="as for run: the harness's " + ", ".join(HARNESS_DEFAULTS) + " (val_fraction defaults to "
                          f"{DEFAULTS['val_fraction']:g} here), layer=A,B (each layer a candidate), and the "
                          "strategy's parameters")
    sel.add_argument("--out", metavar="DIR", help="where select.json, select.md, select.png, report.html and steps/ go "
                                                   "(default benchbone-runs/select)")
    sel.add_argument("--data-dir", metavar="DIR", help="where the datasets' files are")
    sel.add_argument("--cache-dir", metavar="DIR", help="feature cache (default: $BENCHBONE_CACHE_DIR or ~/.cache/benchbone)")
    sel.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: picked automatically); constraints are timed here")
    sel.add_argument("-q", "--quiet", action="store_true", help="no progress bars or round lines")
    _executor_flags(sel.add_argument_group("scale-out: the steps' work as jobs, the decisions here (docs/select.md)"))


def _statistics_flags(parser: argparse.ArgumentParser) -> None:
    """--alpha and --ci-method; their defaults live in benchbone.reporting.statistics, which --help does not import."""
    parser.add_argument("--alpha", type=float, metavar="A",
                        help="significance level of the paired tests, after Holm's correction (default 0.05)")
    parser.add_argument("--ci-method", metavar="METHOD",
                        help="bootstrap interval of the differences: percentile (default) or basic")


def _executor_flags(group) -> None:
    """--executor and each option that an executor declares (``benchbone.execution.executors``), as the executor says."""
    from benchbone.execution import executors

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
