"""Public building blocks for strategy plugins (API 1.2), shared by the built-ins and free for any plugin to use.

- ``chunks``: ``row_chunks(n, width, itemsize)``, ``fits_in_memory(nbytes, device)``: work on features too large
  for memory in row chunks.
- ``logistic``: ``LogisticObjective`` (scikit-learn's multinomial objective, exact, in torch) and
  ``ChunkedLogisticObjective`` (the same over memory-mapped features); ``pack``, ``unpack``.
- ``lbfgs``: ``minimise(objective, C, start)``, ``fit_logistic(X, y, num_classes, C)``, ``extrapolated_start``.
- ``threads``: ``cpu_threads(count)``: torch's and BLAS's CPU threads limited inside a block (small problems on
  a shared machine).
- ``rowspace``: ``RowSpace(X, standardize)``: fewer rows than features, the same fit in the rows' span (r <= n
  dimensions instead of D).
- ``sweep``: ``choose_c(objective, Xva, yva, params, progress, start=None)``, the regularisation sweep that linear-probe runs
  and finetune's probe head reuses (``SWEEP_DEFAULTS``).

These import torch; ``benchbone`` itself does not.
"""
