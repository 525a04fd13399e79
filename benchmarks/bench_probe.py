"""linear-probe's whole C sweep vs scikit-learn's LogisticRegression over the same strengths, side by side.

Both run the same protocol on the same standardised features: fit on train at each C, choose C on val,
refit on train + val, score test. Both stop by scipy's rules: the largest gradient entry at most tol=1e-6,
or a step that lowers the objective by less than ftol, relative (scikit-learn's 64 float64 ulps; the probe
works in float32, where one float32 ulp is the least progress it can hold). scikit-learn fits each C from
scratch, as one calls it; the probe warm-starts along the sweep. ``val_diff`` is the largest difference in
correctly classified validation images between the two over the sweep's strengths (and at which C);
``unresolved`` lists the strengths that the probe's sweep flags as stopped by float32 before it converged.
``ms/iter`` is each side's time over its iterations (probe / scikit-learn), ``2 products ms`` the time of the
two products with the training features that each of the probe's iterations needs (its floor). After the
table, each case's iterations fit by fit (probe / scikit-learn) show where the time goes.
Each side's time is the least of ``--repeat`` runs, the two sides taking turns: the usual guards against a
noisy machine.

    python benchmarks/bench_probe.py [--threads 1 [2 ...]] [--probe-threads N] [--repeat 3] [--image-size 64]
                                     [--cache-dir DIR] [--cifar10-dir DIR] [--cifar10-image-size 32] [--no-cifar10]
                                     [--carves N] [--no-small | --only-small] [--busy-core]

``--carves N`` also times the probe alone on N other stratified validation carves of each case (train + val
carved again, same size; the least of ``--repeat`` runs each, as in the table): its iterations at the weak end
depend on where float32's objective rule happens to stop, and this shows the spread that one run hides.

One thread each is the like-for-like comparison; with more, each library uses them its own way
(torch intra-op threads; scikit-learn's OpenMP loss and the BLAS under numpy). ``--probe-threads N`` gives the
probe N torch threads whatever ``--threads`` gives scikit-learn: ``--threads 1 --probe-threads 2`` on a 2-core
machine is a cell's condition (torch's default, one thread a core) against scikit-learn on one thread. The probe
may fit a small problem on fewer threads than it is given (its record's ``threads`` says how many; the ``threads``
column shows probe / scikit-learn).

``--busy-core`` runs a spinning process pinned to one core (the last this process may use) while the cases run,
so that the benchmark reproduces a shared machine where another job keeps one core busy; it is killed at the end.
The header gives the load average (1, 5, 15 minutes) when the cases start.

Small cases (``--no-small`` leaves them out, ``--only-small`` runs them alone): efficientnet_lite0 features of
digits at 32 px with 240 and 1,000 training rows (stratified subsets of the 1,131 the harness leaves after its
validation carve; val and test as carved), and digits' raw 8 x 8 pixels (64 features) with 216 training rows.

Cases: synthetic 50,000 x 64 features (CIFAR-10-sized, 10 classes), real efficientnet_lite0 features of
scikit-learn digits, and real efficientnet_lite0 features of all of CIFAR-10 (the JPEG copy: 45,000 train +
5,000 val carved by the harness, 10,000 test; 1,280 features), each extracted through benchbone's CLI into
the feature cache (``--cache-dir``, reused when warm) and read back through ``ctx.features``. scikit-learn
on 45,000 x 1,280 takes minutes a strength, so that case sweeps 7 values 1e-4..1e2 (max_iter as the
others) and each side runs once whatever ``--repeat`` says; one bench run then stays within ~15 minutes
on one quiet core. Extraction of 60,000 CIFAR-10 images at 32 px (their own size) costs a few minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_line  # first: it sets torch's allocator up before torch is imported

import numpy as np
import torch

from benchbone.testing import make_context


def synthetic(n_train=50_000, n_test=10_000, dim=64, classes=10, seed=0) -> dict:
    """Gaussian classes with overlapping means and a shared, correlated covariance: not linearly separable."""
    g = np.random.default_rng(seed)
    means = g.normal(scale=0.2, size=(classes, dim))
    mix = np.linalg.qr(g.normal(size=(dim, dim)))[0] * np.logspace(-0.5, 0.5, dim)  # axes of std 0.3..3, rotated

    def draw(n):
        y = g.integers(0, classes, size=n)
        return means[y] + g.normal(size=(n, dim)) @ mix, y

    X, y = draw(n_train)
    val = g.permutation(n_train)[: n_train // 10]
    train = np.setdiff1d(np.arange(n_train), val)
    Xte, yte = draw(n_test)
    as_t = lambda X, y: (torch.tensor(X, dtype=torch.float32), torch.tensor(y))  # noqa: E731
    return {"train": as_t(X[train], y[train]), "val": as_t(X[val], y[val]), "test": as_t(Xte, yte)}


def extract(backbone: str, dataset: str, image_size: int, cache_dir: Path, data_dir: str | None = None) -> dict:
    """``{split: (X, y)}`` of ``backbone`` on ``dataset`` through benchbone's CLI and feature cache, val carved
    as the harness does. The CLI runs in a child process, so that the network's thread pools and memory do
    not linger in the process that times the fits; the features come back through the ``export-features``
    strategy of benchmarks/export_features.py, whatever the cache's file format."""
    from export_features import read_exported

    folder = cache_dir / "exported" / f"{backbone}-{dataset}-{image_size}px"
    cli = subprocess.run([sys.executable, "-c", "from benchbone.cli import main; main()", "run",
                          "--plugin", str(Path(__file__).with_name("export_features.py")), "--backbone", backbone,
                          "--dataset", dataset, "--strategy", "export-features", "--set", f"image_size={image_size}",
                          "--set", f"export-features.to={folder}", "--cache-dir", str(cache_dir),
                          "--out", str(cache_dir / "run"), "-q", *(["--data-dir", data_dir] if data_dir else [])],
                         check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if cli.returncode:
        if not (folder / "test_labels.npy").exists():
            raise RuntimeError(f"benchbone run failed exporting {backbone} on {dataset}:\n{cli.stderr}")
        print(f"# the CLI failed (exit {cli.returncode}); {backbone} on {dataset} at {image_size}px read from the "
              f"earlier export in {folder}", flush=True)
    return read_exported(folder)


def sklearn_sweep(splits: dict, Cs: list[float], max_iter: int, tol: float) -> dict:
    from sklearn.linear_model import LogisticRegression

    (Xtr, ytr), (Xva, yva), (Xte, yte) = (tuple(t.numpy() for t in splits[s]) for s in ("train", "val", "test"))
    Xtr, Xva, Xte = (X.astype(np.float64) for X in (Xtr, Xva, Xte))
    mean, std = Xtr.mean(0), Xtr.std(0, ddof=1).clip(1e-6)
    fits = [LogisticRegression(C=C, tol=tol, max_iter=max_iter).fit((Xtr - mean) / std, ytr) for C in Cs]
    val = [clf.score((Xva - mean) / std, yva) for clf in fits]
    C = Cs[int(np.argmax(val))]
    Xfit, yfit = np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva])
    mean, std = Xfit.mean(0), Xfit.std(0, ddof=1).clip(1e-6)
    final = LogisticRegression(C=C, tol=tol, max_iter=max_iter).fit((Xfit - mean) / std, yfit)
    per_fit = [int(clf.n_iter_.max()) for clf in [*fits, final]]
    return {"C": C, "val": val, "test": final.score((Xte - mean) / std, yte), "iterations": sum(per_fit),
            "per_fit": per_fit}


def cuml_sweep(splits: dict, Cs: list[float], max_iter: int, tol: float) -> dict | None:
    """The same protocol with cuML's GPU LogisticRegression (L-BFGS), or None where cuML is not installed."""
    try:
        from cuml.linear_model import LogisticRegression
    except ImportError:
        return None
    (Xtr, ytr), (Xva, yva), (Xte, yte) = (tuple(t.numpy() for t in splits[s]) for s in ("train", "val", "test"))
    mean, std = Xtr.mean(0), Xtr.std(0, ddof=1).clip(1e-6)
    fits = [LogisticRegression(C=C, tol=tol, max_iter=max_iter).fit((Xtr - mean) / std, ytr) for C in Cs]
    val = [float((clf.predict((Xva - mean) / std) == yva).mean()) for clf in fits]
    C = Cs[int(np.argmax(val))]
    Xfit, yfit = np.concatenate([Xtr, Xva]), np.concatenate([ytr, yva])
    mean, std = Xfit.mean(0), Xfit.std(0, ddof=1).clip(1e-6)
    final = LogisticRegression(C=C, tol=tol, max_iter=max_iter).fit((Xfit - mean) / std, yfit)
    return {"C": C, "test": float((final.predict((Xte - mean) / std) == yte).mean())}


def subset(splits: dict, rows: int, seed: int = 0) -> dict:
    """``splits`` with ``rows`` training rows, a stratified subset (sorted, as the harness keeps rows in order)."""
    from sklearn.model_selection import train_test_split

    X, y = splits["train"]
    keep, _ = train_test_split(np.arange(len(y)), train_size=rows, random_state=seed, stratify=y.numpy())
    keep = torch.from_numpy(np.sort(keep))
    return dict(splits, train=(X[keep], y[keep]))


def digits_pixels(train_rows: int = 216) -> dict:
    """scikit-learn digits as 64 raw pixel features (0..16): the test split as benchbone's digits plugin carves it
    (30%, seed 0, stratified), validation as the harness carves it (10%, seed 0), and ``train_rows`` of the rest."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from benchbone.inputs.splits import _carved_positions

    digits = load_digits()
    X, y = torch.from_numpy(digits.data.astype(np.float32)), torch.from_numpy(digits.target.astype(np.int64))
    train, test = (np.sort(i) for i in train_test_split(np.arange(len(y)), test_size=0.3, random_state=0,
                                                          stratify=digits.target))
    fit, val = _carved_positions(y[train].numpy(), round(0.1 * len(train)), 0, stratify=True, store=None)
    splits = {"train": (X[train[fit]], y[train[fit]]), "val": (X[train[val]], y[train[val]]),
              "test": (X[test], y[test])}
    return subset(splits, train_rows)


@contextlib.contextmanager
def busy_core(enabled: bool):
    """A process spinning in pure Python, pinned to the last CPU this process may use, while the block runs:
    another job keeping one core of a shared machine busy. Yields that CPU's number, or None when not enabled."""
    if not enabled:
        yield None
        return
    cpu = max(os.sched_getaffinity(0))
    spinner = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    try:
        time.sleep(0.5)  # pinned and spinning before the first case
        yield cpu
    finally:
        spinner.kill()
        spinner.wait()


def least_times(repeat: int, *runs):
    """``(least seconds, last result)`` of each of ``runs``, called in turn ``repeat`` times (interleaved, so that
    a machine's slow and fast spells fall on both sides)."""
    times, results = [[] for _ in runs], [None] * len(runs)
    for _ in range(repeat):
        for i, run in enumerate(runs):
            t = time.perf_counter()
            results[i] = run()
            times[i].append(time.perf_counter() - t)
    return [(min(ts), result) for ts, result in zip(times, results)]


def product_pair_ms(X, y, num_classes: int, device: str) -> float:
    """Milliseconds of the two products with the features that each L-BFGS iteration costs (the logits of a
    direction, the gradient from a residual), least of 5: the floor under the probe's time per iteration."""
    from benchbone.compute.logistic import LogisticObjective, pack

    objective = LogisticObjective(X.to(device), y.to(device), num_classes, standardize=True)
    x = pack(objective)
    times = []
    for _ in range(6):
        start = time.perf_counter()
        logits = objective.logits(x, out=objective.trial)
        objective.data_gradient(logits, torch.empty_like(x))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 1000 * min(times[1:])


def probe_context(splits: dict, params: dict, device: str):
    """A strategy context that hands out ``splits`` as cached features, with ``params``, on ``device``."""
    ctx = make_context(features={k: X for k, (X, _) in splits.items()}, labels={k: y for k, (_, y) in splits.items()},
                       params=params)
    ctx.device = device
    return ctx


def run_probe(ctx):
    """linear-probe's predictions on ``ctx``: a fit, not the reuse of the same rows' probe from a previous run."""
    from benchbone_plugins.linear_probe import _FITTED, linear_probe

    _FITTED.clear()
    pred = linear_probe(None, None, ctx)
    if ctx.device.startswith("cuda"):
        torch.cuda.synchronize()
    return pred


def iterations_by_fit(info: dict) -> list[int]:
    """The probe's iterations at each strength of its sweep, then of its refit, from its record."""
    return [point["iterations"] for point in info["sweep"]] + [info["final_iterations"]]


def recarved(splits: dict, seed: int) -> dict:
    """``splits`` with another stratified validation carve of the same size from train + val, carved as the
    harness carves (``benchbone.inputs.splits``)."""
    from benchbone.inputs.splits import _carved_positions

    X, y = (torch.cat([splits["train"][i], splits["val"][i]]) for i in (0, 1))
    train, val = _carved_positions(y.numpy(), len(splits["val"][1]), seed, stratify=True, store=None)
    return {"train": (X[train], y[train]), "val": (X[val], y[val]), "test": splits["test"]}


def over_carves(splits: dict, params: dict, carves: int, device: str, sklearn_s: float, repeat: int) -> str:
    """The probe alone on ``carves`` other validation carves, each the least of ``repeat`` runs as in the table: how
    its iterations and time spread with the problem (at the weak end, with where float32's objective rule happens
    to stop)."""
    iterations, seconds, chosen = [], [], set()
    for seed in range(1, carves + 1):
        ctx = probe_context(recarved(splits, seed), params, device)
        [(probe_s, _)] = least_times(repeat, lambda: run_probe(ctx))
        seconds.append(probe_s)
        iterations.append(sum(iterations_by_fit(ctx.info)))
        chosen.add(ctx.info["chosen_C"])
    spread = lambda v, f: "/".join(f.format(x) for x in (min(v), float(np.median(v)), max(v)))  # noqa: E731
    return (f"probe alone on {carves} other validation carves: iterations {spread(iterations, '{:.0f}')}, seconds "
            f"{spread(seconds, '{:.2f}')} (min/median/max), chosen C {', '.join(f'{C:g}' for C in sorted(chosen))}; "
            f"against this run's scikit-learn time, {sklearn_s / max(seconds):.1f}x to {sklearn_s / min(seconds):.1f}x")


def run_case(name: str, splits: dict, params: dict, repeat: int = 1, threads: int = 1, device: str = "cpu",
             carves: int = 0, probe_threads: int | None = None) -> dict:
    """One row of the table: the probe's sweep and scikit-learn's over ``params``' strengths, side by side; the
    probe with ``probe_threads`` torch threads (default ``threads``), scikit-learn within ``threads``."""
    from benchbone.compute.sweep import sweep_values

    Cs = sweep_values(params)
    ctx = probe_context(splits, params, device)
    probe_threads = probe_threads or threads

    def probe():
        torch.set_num_threads(probe_threads)
        try:
            return run_probe(ctx)
        finally:
            torch.set_num_threads(threads)

    sides = [probe, lambda: sklearn_sweep(splits, Cs, params["max_iter"], params["tol"])]
    if device.startswith("cuda"):
        sides.append(lambda: cuml_sweep(splits, Cs, params["max_iter"], params["tol"]))
    (probe_s, pred), (sk_s, sk), *cuml = least_times(repeat, *sides)
    probe_test = (pred.y_pred.cpu() == splits["test"][1]).double().mean().item()
    n, d = splits["train"][0].shape
    probe_per_fit = iterations_by_fit(ctx.info)
    probe_iterations = sum(probe_per_fit)
    val_images = [round(abs(point["val_top1"] - val) * len(splits["val"][1]))
                  for point, val in zip(ctx.info["sweep"], sk["val"])]
    unresolved = [point["C"] for point in ctx.info["sweep"] if not point["resolved"]]
    row = {"case": name, "train x dim": f"{n} x {d}",
           "threads": f"{ctx.info.get('threads', probe_threads)} / {probe_threads} / {threads}", "device": device, "fits": len(Cs) + 1,
           "probe_iters": probe_iterations, "sklearn_iters": sk["iterations"],
           "ms/iter": f"{1000 * probe_s / probe_iterations:.1f} / {1000 * sk_s / sk['iterations']:.1f}",
           "2 products ms": f"{product_pair_ms(*splits['train'], ctx.num_classes, device):.1f}", "probe_s": probe_s,
           "sklearn_s": sk_s, "ratio": sk_s / probe_s, "probe_C": ctx.info["chosen_C"], "sklearn_C": sk["C"],
           "probe_test": probe_test, "sklearn_test": sk["test"],
           "val_diff": f"{max(val_images)} at C={Cs[int(np.argmax(val_images))]:g}",
           "unresolved": ", ".join(f"{C:g}" for C in unresolved) or "none"}
    labels = [f"C={C:g}" for C in Cs] + [f"refit at C={ctx.info['chosen_C']:g}"]
    row["iterations by fit"] = ", ".join(f"{label} {ours}/{theirs}"
                                         for label, ours, theirs in zip(labels, probe_per_fit, sk["per_fit"]))
    if carves:
        torch.set_num_threads(probe_threads)
        row["carves"] = over_carves(splits, params, carves, device, sk_s, repeat)
        torch.set_num_threads(threads)
    if cuml and cuml[0][1] is not None:
        row.update(cuml_s=cuml[0][0], cuml_C=cuml[0][1]["C"], cuml_test=cuml[0][1]["test"])
    return row


def main() -> None:
    from benchbone_plugins.linear_probe import DEFAULTS
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="thread counts to compare at, each for torch and for scikit-learn's BLAS/OpenMP")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the least time counts")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=None, help="benchbone cache (default: a temporary one)")
    parser.add_argument("--device", default="cpu", help="where the probe fits (scikit-learn runs on the CPU)")
    parser.add_argument("--synthetic-rows", type=int, default=50_000, help="training rows of the synthetic case")
    parser.add_argument("--no-real", action="store_true", help="skip the real-feature cases (digits and CIFAR-10)")
    parser.add_argument("--no-cifar10", action="store_true", help="skip the real CIFAR-10 case")
    parser.add_argument("--cifar10-dir", default=str(Path(__file__).resolve().parents[1] / "../shared/data/cifar10-jpeg"),
                        help="CIFAR-10 class folders (default: the shared JPEG copy)")
    parser.add_argument("--cifar10-image-size", type=int, default=32, help="input size for the CIFAR-10 features")
    parser.add_argument("--probe-threads", type=int, default=None,
                        help="torch threads the probe is given (default: as --threads); scikit-learn keeps --threads")
    parser.add_argument("--no-small", action="store_true", help="skip the small cases (digits subsets, raw pixels)")
    parser.add_argument("--only-small", action="store_true", help="run the small cases alone")
    parser.add_argument("--busy-core", action="store_true",
                        help="keep one core busy with a pinned spinning process while the cases run")
    parser.add_argument("--carves", type=int, default=0,
                        help="also time the probe alone on this many other validation carves of each case")
    args = parser.parse_args()
    params = dict(DEFAULTS)
    large = dict(params, c_max=1e2, c_steps=7)
    print(f"{machine_line()}, torch {torch.__version__} ({torch.get_num_threads()} threads by default)")
    print(f"# C sweep: {params['c_steps']} values {params['c_min']:g}..{params['c_max']:g} (CIFAR-10: "
          f"{large['c_steps']} values {large['c_min']:g}..{large['c_max']:g}, one run each), "
          f"tol={params['tol']}, max_iter={params['max_iter']}; + 1 refit on train+val; "
          f"least of {args.repeat} runs each, taking turns")
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = args.cache_dir or Path(tmp)
        cases = {}
        if not args.only_small:
            cases["synthetic Gaussians"] = (synthetic(args.synthetic_rows, args.synthetic_rows // 5), params, args.repeat)
        if not (args.no_real or args.only_small):
            cases[f"efficientnet_lite0 @ {args.image_size}px, digits"] = (
                extract("efficientnet_lite0", "digits", args.image_size, cache_dir), params, args.repeat)
        if not (args.no_real or args.no_small):
            digits32 = extract("efficientnet_lite0", "digits", 32, cache_dir)
            for rows in (240, 1000):
                cases[f"efficientnet_lite0 @ 32px, digits, {rows} train rows"] = (subset(digits32, rows), params, args.repeat)
        if not args.no_small:
            cases["digits raw 8x8 pixels, 216 train rows"] = (digits_pixels(216), params, args.repeat)
        if not (args.no_real or args.no_cifar10 or args.only_small):
            cases[f"efficientnet_lite0 @ {args.cifar10_image_size}px, CIFAR-10 (JPEG copy)"] = (
                extract("efficientnet_lite0", "cifar10", args.cifar10_image_size, cache_dir, args.cifar10_dir), large, 1)
    rows = []
    with busy_core(args.busy_core) as cpu:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        print(f"# load average {load} (1, 5, 15 min) as the cases start; "
              + (f"a spinning process pinned to cpu {cpu} keeps that core busy" if cpu is not None else "no busy core"))
        for threads in args.threads:
            torch.set_num_threads(threads)
            with threadpool_limits(threads):
                run_case("warm-up", synthetic(200, 50, 8, 3), params, device=args.device)  # first-use costs out of the timings
                rows += [run_case(name, splits, case_params, repeat, threads, args.device, args.carves, args.probe_threads)
                         for name, (splits, case_params, repeat) in cases.items()]
        print(f"# load average {', '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min) as the cases end")
    head = ["case", "train x dim", "threads", "device", "fits", "probe_iters", "sklearn_iters", "ms/iter", "2 products ms",
            "probe_s", "sklearn_s",
            "ratio", "probe_C", "sklearn_C", "probe_test", "sklearn_test", "val_diff", "unresolved"]
    if any("cuml_s" in row for row in rows):
        head += ["cuml_s", "cuml_C", "cuml_test"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells = ["-" if h not in row else f"{row[h]:.2f}" if h.endswith("_s") else f"{row[h]:.1f}x" if h == "ratio" else
                 f"{row[h]:g}" if h.endswith("_C") else f"{100 * row[h]:.2f}%" if h.endswith("_test") else str(row[h])
                 for h in head]
        print("| " + " | ".join(cells) + " |")
    print(f"\niterations of each fit, probe / scikit-learn (max_iter {params['max_iter']}):")
    for row in rows:
        print(f"- {row['case']}, {row['threads']} thread(s): {row['iterations by fit']}")
        if "carves" in row:
            print(f"  {row['carves']}")


if __name__ == "__main__":
    main()
