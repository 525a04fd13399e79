"""``benchbone select``: pick a backbone for a data set without running the full grid.

A cheap screen orders the candidates and makes the first cut; exact evaluations (a probe trained on growing
class-stratified subsamples of the training data, scored on validation items fixed in advance) then eliminate
candidates with paired tests until one is left, the rest are within epsilon of the leader, or the budget is spent.
``elimination`` is that second stage, pure (no torch, no files); its docstring states the guarantee. The rest
(docs/select.md): ``defaults`` (one table), ``request`` (what is asked, why the defaults, the plan),
``constraints`` (measured parameters, GMACs, latency, throughput), ``screen`` (estimator scores, the first cut),
``probes`` (exact evaluations that never see the validation items), ``run`` (the steps, ``select``) and ``output``
(``SelectResult``, select.json, the table and the plot).
"""
__all__ = ["Round", "Selection", "eliminate", "lower_bound", "mcnemar_p", "per_test_alpha"]


def __getattr__(name: str):  # imported when first asked for: the command line's parser reads ``defaults`` only
    if name in __all__:
        from benchbone.selection import elimination

        return getattr(elimination, name)
    raise AttributeError(f"module 'benchbone.selection' has no attribute {name!r}")
