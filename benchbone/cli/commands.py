"""What each ``benchbone`` subcommand does, given its parsed arguments; each returns the exit status."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from benchbone.errors import UsageError
from benchbone.kinds import PLURALS


def _statistics_options(args) -> tuple[float, str]:
    from benchbone.reporting import statistics

    return (statistics.ALPHA if args.alpha is None else args.alpha,
            args.ci_method or statistics.CI_METHODS[0])


def _manager(args, log_to=(), needs: tuple[str, ...] = ()):
    """The plugin manager of this command; a plugin that failed to load is one warning line when the command
    needs plugins of some kind (``needs``: plurals, e.g. ("metrics",))."""
    from benchbone.plugins import get_plugin_manager, warn_load_problems

    pm = get_plugin_manager(blocked=args.no_plugin, extra=args.plugin, log_to=log_to)
    if getattr(args, "debug", False):  # --debug: how each plugin that was skipped failed
        for name, trace in sorted(pm.tracebacks.items()):
            print(f"benchbone: plugin {name} failed to load:\n{trace}", file=sys.stderr, end="")
    if needs:
        warn_load_problems(pm, needs)
    return pm


def cmd_list(args) -> int:
    import fnmatch

    from benchbone.planning.names_index import rows
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
    from benchbone.planning.grid import GridSpec, parse_overrides, parse_weights
    from benchbone.planning.suites import load_suite

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
    from benchbone.execution.harness import run_grid
    from benchbone.plugins import log_targets

    board = run_grid(
        spec, out=Path(args.out or spec.settings.get("out") or Path("benchbone-runs") / name),
        pm=_manager(args, log_to=log_targets(args.log_to)), device=args.device or spec.settings.get("device"),
        cache_dir="" if args.no_cache else args.cache_dir, download=not args.no_download and spec.settings.get("download", True), quiet=args.quiet,
        fail_fast=args.fail_fast, sort_by=args.sort_by, command=_command_line(args.argv),
        executor=args.executor, executor_options=_executor_options(args), progress=args.progress,
        **dict(zip(("alpha", "ci_method"), _statistics_options(args))),
    )
    return 1 if (board["status"] != "ok").any() else 0


def _executor_options(args) -> dict:
    """What the executor flags gave, by option name (None: not given; KEY=VALUE flags as a dict or None)."""
    from benchbone.execution.executors import options
    from benchbone.planning.grid import parse_value

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
    from benchbone.execution.executors import run_spec_file

    record = run_spec_file(args.spec)
    if int(os.environ.get("RANK", "0")) == 0:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items()) or record.get("error", "")
        print(f"benchbone: {record['status']} {record['backbone']} x {record['dataset']} x {record['strategy']} "
              f"(seed {record['seed']}): {shown}", file=sys.stderr)
    return 0 if record["status"] == "ok" else 1


def _command_line(argv: list[str]) -> str:
    return " ".join(["benchbone", *map(shlex.quote, argv)])


def cmd_leaderboard(args) -> int:
    from benchbone.records import check_output_file, read_records, write_atomic
    from benchbone.reporting import formats, leaderboard

    _manager(args, needs=("metrics",))  # the metrics' directions and paired tests come from their plugins
    for flag, path in (("-o", args.output), ("--plot", args.plot)):
        if path:
            check_output_file(Path(path), flag)
    records = read_records([Path(d) for d in args.run_dirs])
    if args.strategy and not (args.pivot or args.plot):
        raise UsageError("--strategy chooses the strategy of --pivot or --plot; pass one of them too")
    if args.robustness:
        from benchbone.reporting import robustness

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
        from benchbone.reporting.plots import layer_curve_png

        if not args.plot_layers.lower().endswith(".png") or not board["backbone"].str.contains("#").any():
            raise UsageError(f"--plot-layers {args.plot_layers!r}: give a .png file name, for runs with --set layer")
        write_atomic(Path(args.plot_layers), layer_curve_png(board, board.attrs["sort_by"], args.title))
        print(f"benchbone: wrote {args.plot_layers}", file=sys.stderr)
    if args.plot_curve:
        import json

        from benchbone.reporting.plots import param_curve_png

        param, _, file = args.plot_curve.partition("=")
        if not file.lower().endswith(".png") or not any(param in json.loads(p) for p in board["params"]):
            raise UsageError(f"--plot-curve {args.plot_curve!r}: give PARAM=FILE.png with a parameter of these rows, "
                             "e.g. shots=curve.png")
        write_atomic(Path(file), param_curve_png(board, board.attrs["sort_by"], param, args.title))
        print(f"benchbone: wrote {file}", file=sys.stderr)
    if args.cd_diagrams:
        from benchbone.reporting import ranks

        written = ranks.write_cd_diagrams(leaderboard.rankings(board), Path(args.cd_diagrams))
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
        from benchbone.reporting import expect

        checked = expect.check(board, expect.load(args.expect))
        text = "\n\n".join([text, f"Measured vs expected ({args.expect}):", expect.to_text(checked, args.format)])
        status = 0 if checked["within"].all() else 1
    _emit(text, args.output)
    return status


def _board(args, records):
    """The leaderboard of ``records`` with the paired tests the flags ask for."""
    from benchbone.reporting import leaderboard

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
    from benchbone.records import read_records
    from benchbone.reporting import compare

    records = read_records([Path(d) for d in args.run_dirs])
    _manager(args, needs=("metrics",))
    board = _board(args, records)
    groups = compare.compare(board, records, [Path(d) for d in args.run_dirs], _manager(args).registries().metrics,
                             strategy=args.strategy, dataset=args.dataset)
    _emit(compare.to_text(groups, *_statistics_options(args), args.format), args.output)
    return 0


def cmd_doctor(args) -> int:
    from benchbone.doctor import lines

    for line in lines(_manager(args), data_dir=args.data_dir, cache_dir=args.cache_dir):
        print(line, flush=True)
    return 0


def cmd_report(args) -> int:
    from benchbone.reporting import report

    _manager(args, needs=("metrics",))
    path = report.write([Path(d) for d in args.run_dirs], args.output, sort_by=args.sort_by, title=args.title,
                        metric_registry=_manager(args).registries().metrics, statistics=_statistics_options(args))
    print(f"benchbone: wrote {path}", file=sys.stderr)
    return 0


def cmd_select(args) -> int:
    from benchbone.execution.executors import get
    from benchbone.planning.grid import parse_overrides, parse_weights
    from benchbone.selection.constraints import Limits, parse_count, parse_duration
    from benchbone.selection.run import Request, select

    options = _executor_options(args)
    get(args.executor, options)  # an option of another executor, or a missing engine: one line, as for run
    request = Request(
        dataset=args.dataset, backbones=args.backbone, out=Path(args.out or "benchbone-runs/select"),
        limits=Limits(args.max_latency_ms, parse_count(args.max_params) if args.max_params else None, args.max_gmacs),
        budget_s=parse_duration(args.budget) if args.budget else None, epsilon=args.epsilon,
        confidence=args.confidence, margin=args.margin, taper=args.taper, full_validation=args.full_validation,
        claim_from=args.claim_from, strategy=args.strategy,
        estimators=args.estimator or None, screen_by=args.screen_by, keep=args.keep, screen_size=args.screen_size,
        overrides=parse_overrides(args.overrides), weights=parse_weights(args.weights), data_dir=args.data_dir,
        cache_dir=args.cache_dir, device=args.device, quiet=args.quiet, command=_command_line(args.argv),
        executor=args.executor, executor_options=options)
    result = select(request, _manager(args, needs=("backbones", "datasets", "estimators")))
    print(result.to_text(args.format), flush=True)
    print(f"benchbone: wrote {request.out}/select.json", file=sys.stderr)
    return 0
