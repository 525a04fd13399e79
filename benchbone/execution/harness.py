"""The orchestration above the runner: a grid expanded, handed to an executor, and its leaderboard and report
printed and written. The path of one cell: ``session`` (shared state) -> ``cell`` (one cell into a record) ->
``runner`` (the resume loop) -> ``executors`` (who runs the cells) -> here.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from benchbone.errors import UsageError
from benchbone.execution.artefacts import missing_lines, why_failed
from benchbone.execution.cell_run import check_cells_against_data, feature_timings  # noqa: F401 (feature_timings: its v1 import path)
from benchbone.execution.progress import Progress
from benchbone.execution.session import Session
from benchbone.plugins import PluginManager, warn_load_problems
from benchbone.records import check_run_dir


def capable_cells(cells: list, session: Session) -> list:
    """``cells`` less those whose strategy requires what their backbone lacks (``register(..., requires=("text",))``),
    with one warning line per strategy naming the backbones left out. A backbone's registration says what it has
    (``text=``); one that does not say, or whose weights come from a file, is built to look. Nothing left: UsageError."""
    from benchbone.registry import CAPABILITIES

    registries, found, kept, left_out = session.registries, {}, [], {}
    for cell in cells:
        for capability in registries.strategies.get(cell.strategy).meta.get("requires") or ():
            key = (cell.backbone, cell.pretrained, cell.weights, cell.layer, capability)
            if key not in found:
                declared = registries.backbones.get(cell.backbone).meta.get(capability)
                found[key] = declared if isinstance(declared, bool) and not cell.weights else \
                    getattr(session.backbone(cell), capability, None) is not None
            if not found[key]:
                left_out.setdefault((cell.strategy, capability), {})[cell.backbone_label] = None
                break
        else:
            kept.append(cell)
    for (strategy, capability), labels in left_out.items():
        line = (f"{strategy} needs {CAPABILITIES[capability]}; left out for {len(labels)} backbone(s) without one: "
                f"{', '.join(labels)}")
        if not kept:
            raise UsageError(f"{line}; give a backbone that has one (openclip/ARCH:TAG, hf/ CLIP models)")
        warnings.warn(line, stacklevel=2)
    return kept


def run_grid(
    spec,
    *,
    out: Path,
    pm: PluginManager | None = None,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    download: bool = True,
    quiet: bool = False,
    fail_fast: bool = False,
    sort_by: str | None = None,
    command: str | None = None,
    echo: bool = True,
    executor: str = "local",
    executor_options: dict | None = None,
    alpha: float = 0.05,
    ci_method: str = "percentile",
    progress: str = "auto",
):
    """Expand ``spec`` into cells, run those not yet finished in ``out``, and return the leaderboard.

    ``alpha`` and ``ci_method`` are those of the leaderboard's paired tests (``benchbone.reporting.statistics``).
    ``progress`` is what stderr shows as the cells run (``benchbone.execution.progress``): "auto" (a line as each
    cell starts and ends, with a counter and the time left; per-batch bars too when stderr is a terminal), "plain"
    (the lines alone) or "json" (one JSON event per line); ``quiet`` hides the lines and bars but not a failed
    cell's line, the warnings or the once-per-run summary of ``SummarisedWarning``s. ``echo`` prints the leaderboard.

    ``executor`` is "local" (this process), "submitit", "ray" or "specs" (see ``benchbone.execution.executors``). The
    leaderboard (CSV, markdown, JSON) is written to ``out`` from the records of this grid.
    """
    from benchbone.reporting.statistics import check_options

    check_options(alpha, ci_method)  # before any cell runs
    reporter = Progress(progress, quiet=quiet, fail_fast=fail_fast)
    with reporter.watch():
        try:
            return _run_grid(spec, out, pm, device, cache_dir, download, fail_fast, sort_by, command, echo, executor,
                             executor_options, alpha, ci_method, reporter)
        finally:  # a run stopped early still says what its cells warned of (a finished one has said it)
            reporter.summarise()


def _run_grid(spec, out, pm, device, cache_dir, download, fail_fast, sort_by, command, echo, executor, executor_options,
              alpha, ci_method, reporter: Progress):
    from benchbone.execution import executors
    from benchbone.planning import names_index
    from benchbone.planning.grid import expand, split_backbone
    from benchbone.plugins import get_plugin_manager
    from benchbone.records import write_atomic
    from benchbone.reporting import leaderboard
    from benchbone.reporting.report import page as report_page

    pm = pm or get_plugin_manager()
    asked = [split_backbone(b)[0] for b in [*spec.backbones, *spec.weights]]
    index_root = names_index.DEFAULT if cache_dir is None else cache_dir or None  # the run's cache directory
    names_index.narrow(pm, "backbones", asked, index_root)  # fill the registry from only these backbones' plugins
    warn_load_problems(pm)
    cells = expand(spec, pm.registries())
    runner = executors.get(executor, executor_options or {})
    if fail_fast and executor != "local":
        raise UsageError(f"--fail-fast needs --executor local; {executor} runs cells concurrently")
    if sort_by is not None and sort_by not in cells[0].metrics:
        raise UsageError(f"--sort-by {sort_by!r} is not a metric of this run ({', '.join(cells[0].metrics)})")
    check_run_dir(Path(out))  # a run directory that cannot be written fails before any cell, as bad data does
    session = Session(pm, device=device, cache_dir=cache_dir, download=download, quiet=not reporter.bars,
                      command=command)
    for key in {(c.dataset, c.data_dir, c.dataset_params) for c in cells}:  # bad data fails here, before anything is written
        session.dataset(*key)
    # ids keyed by what each dataset read, not by how a path was spelled (one folder named twice: one cell)
    cells = list({c.id: c for c in (session.bind(c) for c in cells)}.values())
    check_cells_against_data(cells, session)  # and sizes or shots the splits cannot give
    for cell in {(c.backbone, c.weights): c for c in cells if c.weights}.values():
        session.backbone(cell)  # and so do weights files that do not fit their backbone
    cells = capable_cells(cells, session)  # strategies' requirements: zero-shot's backbones need a text tower
    if session.store.root is not None:  # the input is sound: keep the name index for the next run (not --no-cache)
        names_index.rows(pm, "backbones", root=session.store.root)

    def warn(msg: str) -> None:  # shown even with -q (one line through the CLI): something asked for is missing
        warnings.warn(msg, stacklevel=2)

    def report(record: dict, how: str) -> None:
        reporter.finish(record, how)
        for line in missing_lines(record):  # those of the deferred artefacts come when they are drawn
            warn(line)

    reporter.begin(cells, session.device, Path(out), finished_cells(cells, Path(out)))
    later: list = []  # what waits for the leaderboard: the last cell's confusion PNG and its loggers
    records = runner.submit(
        cells, session, Path(out), requested_device=device, fail_fast=fail_fast, on_record=report, later=later,
        on_start=reporter.start)
    if executor == "specs":  # nothing ran: the specs are written, and their commands printed
        reporter.end()
        return leaderboard.build(records)
    board = leaderboard.build(records, sort_by=sort_by, run_dirs=[Path(out)], metric_registry=pm.registries().metrics,
                              alpha=alpha, ci_method=ci_method)
    leaderboard.write(board, records, Path(out))
    written = "leaderboard.csv, leaderboard.md, leaderboard.json"
    try:  # a secondary page: its failure never costs the leaderboard or the records
        write_atomic(Path(out) / "report.html", report_page(board, records, [Path(out)]))
        written += ", report.html"
    except Exception as exc:  # noqa: BLE001
        warn(f"report.html not written: {why_failed(exc)}; the records and leaderboard files are complete")
    if echo:
        print(leaderboard.to_text(board, "table"), flush=True)
    for finish in later:  # a run stopped before this leaves its last record pending: the next run completes it
        finish()
    reporter.end(written, Path(out))
    return board


def finished_cells(cells: list, run_dir: Path) -> set[str]:
    """Ids of the cells whose "ok" record is in ``run_dir`` already: the progress counts them out of the time left.
    A quick look (the status alone); the resume loop checks each record in full."""
    import json

    from benchbone.records import record_path

    found = set()
    for cell in cells:
        try:
            if json.loads(record_path(run_dir, cell.id).read_text(encoding="utf-8")).get("status") == "ok":
                found.add(cell.id)
        except (OSError, ValueError, AttributeError):
            continue
    return found
