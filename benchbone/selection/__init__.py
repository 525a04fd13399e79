"""``benchbone select``: pick a backbone for a data set without running the full grid.

A cheap screen orders the candidates and makes the first cut; exact evaluations (a probe trained on growing
class-stratified subsamples of the training data, scored on the same validation items) then eliminate
candidates with paired tests until one is left, the rest are within epsilon of the leader, or the budget is
spent. ``elimination`` is that second stage, pure (no torch, no files); its docstring states the guarantee.
The rest (docs/select.md): ``request`` (what is asked, the defaults, the plan), ``constraints`` (measured
parameters, GMACs, latency, throughput), ``screen`` (estimator scores, the first cut), ``probes`` (exact
evaluations that never see the validation items), ``run`` (the steps, ``select``) and ``output``
(``SelectResult``, select.json, the table and the plot).
"""
from benchbone.selection.elimination import Round, Selection, eliminate, lower_bound, mcnemar_p, per_test_alpha

__all__ = ["Round", "Selection", "eliminate", "lower_bound", "mcnemar_p", "per_test_alpha"]
