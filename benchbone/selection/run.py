"""``benchbone select`` end to end: candidates, measured constraints, the screen, rounds of exact evaluation, test.

The steps go through the run's machinery directly rather than as records of ``run_grid`` cells: the cells of
the grid (``planning.grid.expand``) name the candidates (patterns, ``@random``, ``--set layer``, ``--weights``),
``execution.session.Session`` builds datasets and backbones, ``split_views`` carves validation as ``run`` does,
and every feature goes through ``execution.context.Context.features`` and so through the content-addressed
feature cache. What a cell record cannot carry is what select needs: per-validation-item correctness of a
probe fitted without the validation items, on nested subsamples whose new rows are each a cache entry of
their own (round r extracts only the images round r-1 did not). So each step keeps its own small record:
constraints in ``<cache>/efficiency/``, estimator scores in ``<cache>/estimates/``, each round's evaluation in
``OUT/steps/``, with the device seconds measured when it first ran. A rerun after a kill reads them all back
and, since the budget is charged with those stored seconds, reaches the same answer. With ``--executor
submitit`` or ``ray`` the steps' work runs as jobs that leave those records (``dispatch``); decisions stay here.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from benchbone.errors import UsageError, first_line
from benchbone.reporting.presentation import duration_text
from benchbone.selection import constraints as cons
from benchbone.selection import screen
from benchbone.selection import steps as step_records
from benchbone.selection.defaults import DEFAULTS
from benchbone.selection.elimination import eliminate
from benchbone.selection.probes import PROBES
from benchbone.selection.request import (Request, min_val_items, nested_chunks, round_sizes, smallest_epsilon,
                                         validation_sizes)

__all__ = ["Request", "Selector", "select"]

class Candidate:
    """One backbone (x layer) of the selection and everything measured of it."""

    def __init__(self, cell):
        self.cell, self.label = cell, cell.backbone_label
        self.constraints: dict = {}
        self.scores: dict = {}
        self.status = "candidate"
        self.why = ""
        self.features: dict = {}     # chunk index or validation chunk ("val0", ...) -> (X, y)
        self.extract_s: dict = {}    # chunk index / "val0", "val1", ... / "test" -> seconds, images
        self.meta: dict = {}
        self.fit_rate: float | None = None  # seconds per training image of the last fit
        self.test: dict | None = None
        self.state = ""              # the digest of the backbone's weights (keys every step)
        self.charged: set = set()    # chunks (and "val0", ..., "test") whose extraction seconds are counted
        self.fit_s: dict = {}        # training size -> seconds of the probe's fit
        self.probe = None            # (training size, predict, info) of the last fitted probe


class Selector:
    prefetch = None  # ``dispatch.Dispatched.prefetch``: run steps as jobs before they are read (None: here)

    def __init__(self, request: Request, pm, say):
        self.r, self.pm, self.say = request, pm, say
        self.spent = 0.0
        self.lines: list[str] = []

    # ------------------------------------------------------------------ candidates and data
    def cells(self) -> list:
        from benchbone.planning import names_index
        from benchbone.planning.grid import GridSpec, expand, split_backbone

        r = self.r
        overrides = dict(r.overrides)
        overrides.setdefault("val_fraction", DEFAULTS["val_fraction"])
        if r.strategy == "linear-probe":  # a coarser sweep, and float64, which resolves every point of it
            overrides.setdefault("linear-probe.c_steps", DEFAULTS["c_steps"])
            overrides.setdefault("linear-probe.dtype", "float64")
        names_index.narrow(self.pm, "backbones", [split_backbone(b)[0] for b in [*r.backbones, *r.weights]],
                           names_index.DEFAULT if r.cache_dir is None else r.cache_dir or None)
        spec = GridSpec(list(r.backbones), [r.dataset], [r.strategy], ["top1"], 1, overrides, r.data_dir, dict(r.weights))
        cells = expand(spec, self.pm.registries())
        if len({c.dataset for c in cells}) > 1:
            raise UsageError(f"-d {r.dataset!r} matches {len({c.dataset for c in cells})} datasets; select chooses for one")
        if len({c.strategy for c in cells}) > 1:
            raise UsageError(f"--strategy {r.strategy!r} matches {len({c.strategy for c in cells})} strategies; use one")
        if len(cells) < 2:
            raise UsageError(f"one candidate ({cells[0].backbone_label}): nothing to select; give two or more with "
                             "-b (repeatable, patterns such as 'timm/*') or --set layer=A,B")
        self.generic = cells[0].strategy not in PROBES  # run through the strategy registry (probes.strategy_step)
        return cells

    def _identity(self, cand, backbone) -> dict:
        cell = cand.cell
        return {"backbone": cell.backbone, "weights": backbone.weights or ("pretrained" if cell.pretrained else "random"),
                "init_seed": None if cell.pretrained else cell.seed, "dataset": cell.dataset, "data_dir": cell.data_dir,
                "state_sha256": self.session.backbone_digest,
                **({"dataset_params": dict(cell.dataset_params)} if cell.dataset_params else {}),
                **({"layer": cell.layer} if cell.layer else {})}

    def _build(self, cand):
        """The candidate's backbone, preprocessing and extraction settings (the session keeps the last one)."""
        from benchbone.inputs.extraction import ExtractionSettings
        from benchbone.inputs.transforms import Preprocess

        options = dict(cand.cell.options)
        backbone = self.session.backbone(cand.cell)
        preprocess = Preprocess.for_backbone(backbone, options["image_size"])
        settings = ExtractionSettings(self.session.device, options["batch_size"], options["precision"],
                                      options["channels_last"], options["compile"])
        return backbone, preprocess, settings

    def features(self, cand, view, what: str):
        """``(X, y)`` of ``view``'s rows for ``cand`` through the feature cache; the extraction's seconds are
        charged (as measured when first extracted) the first time ``what`` is asked in this run."""
        from benchbone.execution.context import Context

        backbone, preprocess, settings = self._build(cand)
        cell = cand.cell
        ctx = Context(device=self.session.device, seed=cell.seed, params=dict(cell.params), classes=list(self.data.classes),
                      backbone=backbone, views={"train": view, "val": view, "test": view},
                      images=lambda source: self.session.images(cell.dataset, cell.data_dir, source, cell.dataset_params),
                      preprocess=preprocess, feature_identity=self._identity(cand, backbone), store=self.session.store,
                      memory=self.session._features, extraction=settings, progress=self.session.progress,
                      workdir=self.r.out / "work" / cell.id)
        X, y = ctx.features("train")
        seconds = float(ctx.extraction["train"].get("seconds") or 0.0)
        if what not in cand.extract_s:
            cand.extract_s[what] = {"seconds": seconds, "images": len(view), "cached": ctx.extraction["train"]["cached"]}
        return np.asarray(X, dtype=np.float32), np.asarray(y)

    # ------------------------------------------------------------------ the steps
    def run(self):
        """Every step: constraints, the screen, the rounds and the test; returns self."""
        kept = self.screen(self.constrain(self.prepare()))
        self.selection = self.eliminate(kept)  # rounds of exact evaluation
        self.score_test()  # once, for the chosen candidate and the survivors
        return self

    def prepare(self) -> list:
        """Candidates, session, splits, the nested order and sizes; the candidates."""
        from benchbone.execution.cell_run import split_views
        from benchbone.execution.harness import capable_cells
        from benchbone.execution.session import Session
        from benchbone.records import check_run_dir

        r, say = self.r, self.say
        if not 0 < r.confidence < 1 or r.epsilon < 0 or r.margin < 0 or (r.taper or 0) < 0:
            raise UsageError("need 0 < --confidence < 1, --epsilon >= 0, --margin >= 0 and --taper >= 0")
        cells = self.cells()
        check_run_dir(r.out)
        self.session = Session(self.pm, device=r.device, cache_dir=r.cache_dir, quiet=r.quiet, command=r.command)
        cells = capable_cells(cells, self.session)  # a strategy's requires (zero-shot's text tower)
        if len(cells) < 2:
            raise UsageError(f"only {cells[0].backbone_label} has what --strategy {r.strategy} needs: nothing to select")
        self.data = self.session.dataset(cells[0].dataset, cells[0].data_dir, cells[0].dataset_params)
        views = split_views(cells[0], self.data, self.session.splits)
        self.pool, self.val, self.test_view = views["train"], views["val"], views["test"]
        classes = len(self.data.classes)
        self.sizes = round_sizes(len(self.pool), classes, r.screen_size)
        self.chunks = nested_chunks(self.pool, self.sizes, cells[0].seed)
        self.val_sizes = validation_sizes(len(self.val), self.sizes, not r.full_validation)
        ends = sorted(set(self.val_sizes))
        self.val_chunks = nested_chunks(self.val, ends, cells[0].seed)
        self._val_count = [ends.index(v) + 1 for v in self.val_sizes]  # validation chunks round r reads
        registry = self.pm.registries().estimators
        self.estimator_names = names = screen.usable(registry, r.estimators, say)
        if r.screen_by not in names:
            raise UsageError(f"--screen-by {r.screen_by!r} is not among the estimators computed ({', '.join(names)})")
        candidates = [Candidate(c) for c in cells]
        self.candidates = {c.label: c for c in candidates}
        say(f"benchbone: select on {self.data_name()}: {len(candidates)} candidate(s) on {self.session.device}; "
            f"pool {len(self.pool)} training, {len(self.val)} validation, {len(self.test_view)} test images; "
            f"sizes {', '.join(map(str, self.sizes))} (validation items {', '.join(map(str, self.val_sizes))})")
        return candidates

    def parts(self, r_index: int) -> tuple[list, list]:
        """The rows round ``r_index`` reads, as (key, SplitView) pairs: its training chunks (keys 0..r) and its
        validation chunks ("val0", ...: the first ``val_sizes[r_index]`` validation items)."""
        return ([(i, self.chunks[i]) for i in range(r_index + 1)],
                [(f"val{j}", self.val_chunks[j]) for j in range(self._val_count[r_index])])

    def val_prefix(self, r_index: int):
        """The validation items round ``r_index`` scores, one SplitView in the order its chunks are read."""
        from benchbone.inputs.splits import SplitView

        chunks = [view for _, view in self.parts(r_index)[1]]
        return SplitView(self.val.source, self.val.dataset, np.concatenate([c.indices for c in chunks]),
                         np.concatenate([c.labels for c in chunks]))

    def constrain(self, candidates: list) -> list:
        """Measure each candidate, before any data is touched; those within the limits."""
        r, say = self.r, self.say
        # latency and throughput are timed when a latency limit or a budget (whose predictions use them) asks
        self.timed = r.limits.max_latency_ms is not None or r.budget_s is not None
        fitting, charged = [], set()
        for cand in candidates:
            try:
                backbone, preprocess, settings = self._build(cand)
                figures, measured = cons.cached_measure(self.session.store.root, backbone.model,
                                                 preprocess.size, self.session.device, settings,
                                                 batch=min(32, settings.batch_size),
                                                 candidate={"backbone": cand.cell.backbone, "layer": cand.cell.layer},
                                                 timed=self.timed)
            except UsageError:
                raise
            except Exception as exc:  # noqa: BLE001 (a plugin may fail in any way: the others go on)
                cand.status, cand.why = "failed", f"failed to load: {first_line(exc)}"
                say(f"benchbone: dropped {cand.label}: {cand.why}", important=True)
                continue
            cand.constraints, cand.state = figures, self.session.backbone_digest
            self.spent += 0.0 if measured in charged else figures["measure_s"]  # a twin's figures are its network's
            charged.add(measured)
            cand.meta = {"params_m": figures["params"] / 1e6, "input_size": list(preprocess.size),
                         "pretrained": cand.cell.pretrained,
                         **{k: v for k, v in backbone.info.items() if k in ("imagenet_top1", "source_top1", "top1")},
                         **{k: v for k, v in self.pm.registries().backbones.get(cand.cell.backbone).meta.items()
                            if k in ("imagenet_top1", "source_top1")}}
            broken = r.limits.broken(figures)
            if broken:
                cand.status, cand.why = "constraint", "; ".join(broken)
                say(f"benchbone: dropped {cand.label}: {cand.why}", important=True)
                continue
            fitting.append(cand)
        if not fitting:
            raise UsageError(f"nothing fits: {len(candidates)} candidate(s), none within the constraints or loadable "
                             "(see the lines above); relax --max-latency-ms, --max-params or --max-gmacs")
        if len(fitting) < 2:
            say(f"benchbone: only {fitting[0].label} is left after the constraints", important=True)
        return fitting

    def screen(self, fitting: list) -> list[str]:
        """Estimator scores on the first subsample; the labels the first cut keeps, in the screen's order."""
        r, say = self.r, self.say
        screen_cost = sum(self.sizes[0] / c.constraints["throughput_ips"] for c in fitting) if self.timed else 0.0
        if r.budget_s is not None and self.spent + screen_cost > r.budget_s:
            raise UsageError(f"--budget {duration_text(r.budget_s)} is too small for the screen: it needs about "
                             f"{duration_text(self.spent + screen_cost)} ({len(fitting)} candidates x "
                             f"{self.sizes[0]} images at their measured throughput); give a larger --budget or fewer candidates")
        failed = self.prefetch([c.label for c in fitting], None) if self.prefetch else ()  # the screen's jobs
        fitting = [c for c in fitting if c.label not in failed]  # a job that failed: its candidate is out
        for cand in fitting:
            screen.step(self, cand)
        labels = [c.label for c in fitting]
        kept, why = screen.first_cut(labels, {c.label: c.scores for c in fitting}, r.screen_by,
                                     screen.keep_count(len(fitting), r.keep))
        self.screened = len(fitting) - len(kept)
        for cand in fitting:
            cand.status, cand.why = ("kept" if cand.label in kept else "screened out"), why[cand.label]
        say(f"benchbone: screen ({r.screen_by}, {self.sizes[0]} images): kept {len(kept)} of {len(fitting)}: {', '.join(kept)}")
        return kept

    def data_name(self) -> str:
        return self.r.dataset

    def eliminate(self, kept: list[str]):
        r = self.r
        m = len(self.val)
        if len(kept) > 1:
            needed = min_val_items(r.confidence, len(kept), len(self.sizes))
            if m < needed:
                raise UsageError(f"{m} validation items are too few: dropping a candidate at {r.confidence:g} confidence "
                                 f"over {len(kept)} candidates and {len(self.sizes)} rounds needs at least {needed}; "
                                 "raise --set val_fraction or val_size")
            floor = smallest_epsilon(m, r.confidence, len(kept), len(self.sizes))
            if floor > r.epsilon:
                self.say(f"benchbone: note: with {m} validation items no within-{r.epsilon:g}-point claim is possible "
                         f"(the smallest is {floor:.1f} points); only eliminations can end the selection", important=True)
        reserve = 0.0 if r.budget_s is None else max(len(self.test_view) / self.candidates[c].constraints["throughput_ips"]
                                                   for c in kept)
        claim_from = r.claim_from * len(self.pool) if r.claim_from <= 1 else r.claim_from
        steps = Path(r.out) / "steps"

        def evaluate(label, size):
            return self.evaluate(self.candidates[label], size, steps)

        def cost(label, size):
            cand = self.candidates[label]
            r_index = self.sizes.index(size)
            rate = 1 / cand.constraints["throughput_ips"]
            if self.generic:  # the strategy passes its own images: the last step's seconds per training image
                return cand.fit_rate * size if cand.fit_rate else rate * (size + self.val_sizes[r_index])
            new = sum(len(view) for part in self.parts(r_index) for key, view in part if key not in cand.charged)
            return rate * new + (cand.fit_rate or 0.0) * size

        budget = None if r.budget_s is None else r.budget_s - self.spent - reserve
        result = eliminate(kept, evaluate, epsilon=r.epsilon / 100, confidence=r.confidence, sizes=self.sizes,
                           budget_s=budget, cost=cost if budget is not None else None, margin=r.margin / 100,
                           taper=r.taper, claim_from=claim_from, screened=self.screened, prefetch=self.prefetch)
        self.spent += result.seconds
        for rnd in result.history:
            self.say(f"benchbone: round {rnd.index} ({rnd.size} images, {rnd.items} validation): leader {rnd.leader} "
                     f"{100 * rnd.accuracy[rnd.leader]:.1f}%; dropped {', '.join(rnd.eliminated) or 'none'} "
                     f"(margin {100 * rnd.margin:.1f} points); "
                     f"{len(rnd.survivors)} left; {rnd.seconds:.1f} s")
        return result

    def evaluate(self, cand, size, steps: Path, test: bool = False):
        """``steps.evaluate`` of ``cand`` at ``size``: (correct per validation item, seconds)."""
        return step_records.evaluate(self, cand, size, steps, test)

    def score_test(self):
        """The test split scored once, for the chosen candidate and then each survivor while the budget lasts."""
        from benchbone.reporting.bootstrap import bootstrap_ci

        sel = self.selection
        size = sel.final_size or self.sizes[0]
        if self.prefetch and self.r.budget_s is None:  # every test step's job at once (with a budget: one by one)
            self.prefetch(sel.survivors, size, test=True)
        for i, label in enumerate(sel.survivors):
            cand = self.candidates[label]
            if i and self.r.budget_s is not None and self.spent + len(self.test_view) / cand.constraints[
                    "throughput_ips"] > self.r.budget_s:
                self.say(f"benchbone: test not scored for {label}: the budget is spent", important=True)
                continue
            if self.prefetch and self.prefetch([label], size, test=True):  # its job failed: one line said why
                continue
            self.evaluate(cand, size, Path(self.r.out) / "steps", test=True)
            self.spent += cand.test["seconds"]
            correct = cand.test["correct"]
            cand.test.update(top1=float(correct.mean()), ci=bootstrap_ci(correct), size=size, items=len(correct))

    def full_grid_s(self) -> float:
        """The full grid's device time, estimated from measured per-image costs: every candidate that met the
        constraints extracts pool + validation + test images (at its screen extraction's seconds per image; a
        strategy's step passes the first two itself) and fits its probe once on the whole pool: its own fit at the
        largest size it reached, scaled to the pool by the images, or for a candidate never fitted (cut by the
        screen) the median of those."""
        measured = [c for c in self.candidates.values() if c.extract_s.get(0)]
        fits = {c.label: c.fit_s[max(c.fit_s)] * len(self.pool) / max(c.fit_s) for c in measured if c.fit_s}
        unfitted = float(np.median(list(fits.values()))) if fits else 0.0
        total = 0.0
        for c in measured:
            per_image = c.extract_s[0]["seconds"] / max(1, c.extract_s[0]["images"])
            images = len(self.test_view) + (0 if self.generic else len(self.pool) + len(self.val))
            total += per_image * images + fits.get(c.label, unfitted)
        return total


def select(request: Request, pm):
    """Run the selection of ``request`` with plugin manager ``pm``; the ``SelectResult`` (also written to OUT)."""
    from benchbone.selection.dispatch import Dispatched
    from benchbone.selection.output import SelectResult

    def say(line: str, important: bool = False) -> None:  # progress lines only without quiet
        if important or not request.quiet:
            print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    selector = (Selector if request.executor == "local" else Dispatched)(request, pm, say).run()
    result = SelectResult.from_selector(selector, wall_s=time.perf_counter() - started)
    result.write(Path(request.out), say)
    return result
