"""A grid (from flags, a suite file or ``benchbone.run``) and the cells it expands to."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchbone.api import RANDOM_SUFFIX, Cell
from benchbone.errors import UsageError
from benchbone.kinds import KINDS as PLURAL  # singular -> plural
from benchbone.plugins import Registries

# Parameters of the harness itself, settable with --set like a strategy's.
HARNESS_DEFAULTS: dict[str, Any] = {"val_fraction": 0.1, "image_size": None, "batch_size": 64,
                                    "train_per_class": None, "train_fraction": None, "test_per_class": None,
                                    "train_size": None, "val_size": None,  # exact split sizes (VTAB-1k: 800, 200)
                                    "precision": "auto", "channels_last": None, "compile": False,  # None: automatic
                                    "native_size": False}  # true: images already at the input size stay unresized
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Keys of --set that multiply the grid rather than set a parameter: each value is a row of its own.
CONDITION_KEYS = {"layer": "an intermediate block (or all)", "layers": "the same as layer",
                  "corruption": "a test-image corruption (or all)", "severity": "its severities 1..5",
                  "corruption_seed": "the corruptions' seed"}
@dataclass
class GridSpec:
    """What the user asked for: names or patterns, seeds and parameter overrides."""

    backbones: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    strategies: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    seeds: int | None = None  # None: not given (a suite's, else 1)
    overrides: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    weights: dict[str, str] = field(default_factory=dict)  # backbone name -> local state-dict file
    data_dirs: dict[str, str] = field(default_factory=dict)  # dataset name -> its own data directory (suites)
    settings: dict[str, Any] = field(default_factory=dict)  # a suite's run settings (suites.RUN_SETTINGS)

    def merge(self, other: "GridSpec") -> "GridSpec":
        """``other`` (the command line) adds names and overrides to this one (a suite); what both give, such as
        the seeds, is ``other``'s."""
        return GridSpec(
            backbones=self.backbones + [b for b in other.backbones if b not in self.backbones],
            datasets=self.datasets + [d for d in other.datasets if d not in self.datasets],
            strategies=self.strategies + [s for s in other.strategies if s not in self.strategies],
            metrics=self.metrics + [m for m in other.metrics if m not in self.metrics],
            seeds=other.seeds if other.seeds is not None else self.seeds,
            overrides={**self.overrides, **other.overrides},
            data_dir=other.data_dir or self.data_dir,
            weights={**self.weights, **other.weights},
            data_dirs={} if other.data_dir else {**self.data_dirs, **other.data_dirs},  # --data-dir: every dataset
            settings={**self.settings, **other.settings},
        )

    @property
    def seed_count(self) -> int:
        return 1 if self.seeds is None else self.seeds


def parse_value(text: str) -> Any:
    """A --set value: true/false/none, an int, a float, a comma list, or a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "," in text:
        return [parse_value(part) for part in text.split(",") if part.strip()]
    return text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["key=value", "strategy.key=value"]`` from the command line."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r} is not key=value; write e.g. --set val_fraction=0.2")
        overrides[key.strip()] = parse_value(value)
    return overrides


def coerce(key: str, value: Any, default: Any, declared: type | None = None) -> Any:
    """``value`` as the ``declared`` type or that of ``default`` (None stays allowed where the default is None),
    or a UsageError naming the key and the expected type."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"--set {key}={value!r}: give a finite number")
    expected = declared or (None if default is None else type(default))
    if expected is None or value is None:
        return value
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    elif expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif expected in (list, tuple):
        return list(value) if isinstance(value, (list, tuple)) else [value]
    elif isinstance(value, expected):
        return value
    raise UsageError(f"--set {key}={value!r}: expected {expected.__name__} (default {default!r})")


def parse_weights(items: list[str]) -> dict[str, str]:
    """``["NAME=PATH", ...]`` from ``--weights``, paths made absolute."""
    weights = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name.strip() or not file.strip():
            raise UsageError(f"--weights {item!r} is not NAME=PATH; write e.g. --weights resnet50=resnet50.safetensors")
        weights[name.strip()] = str(Path(file.strip()).expanduser().resolve())
    return weights


def resolve_weights(spec: GridSpec, registries: Registries) -> dict[str, tuple[str, str]]:
    """Canonical backbone name -> (weights file, its sha256), every file checked to exist."""
    from benchbone.inputs.weights import file_digest

    out = {}
    for name, file in spec.weights.items():
        if name.endswith(RANDOM_SUFFIX):
            raise UsageError(f"--weights {name}={file}: weights from a file are not random init; drop {RANDOM_SUFFIX}")
        if not Path(file).is_file():
            raise UsageError(f"--weights {name}={file}: no such file; pass an existing .safetensors or .pth file")
        out[registries.backbones.get(name).name] = (file, file_digest(file))
    return out


def backbone_layers(overrides: dict, backbones: list[tuple[str, bool]], registries: Registries) -> dict[str, list]:
    """Backbone name -> the blocks asked for by ``--set layer=NAME[,NAME]`` or ``layers=all`` (popped from
    ``overrides``); backbones that offer no layers (``pixels``) run on their usual features."""
    requested = [overrides.pop(key) for key in ("layer", "layers") if key in overrides]
    if not requested or requested[0] is None:
        return {}
    wanted = [str(v) for v in (requested[0] if isinstance(requested[0], list) else [requested[0]])]
    out = {}
    for name, _ in backbones:
        offer = registries.backbones.get(name).meta.get("layers")
        valid = offer() if offer else []
        if not valid:
            continue
        for layer in wanted:
            if layer != "all" and layer not in valid:
                raise UsageError(f"--set layer={layer}: backbone {name!r} has no layer {layer!r}; its layers: "
                                 f"{', '.join(valid)}")
        out[name] = valid if "all" in wanted else wanted
    if not out:
        raise UsageError(f"--set layer={','.join(wanted)}: no backbone of this run offers intermediate layers "
                         "(timm, torchvision and efficientnet_lite backbones do)")
    return out


def test_conditions(overrides: dict) -> list[tuple | None]:
    """The test images' conditions asked for by ``--set corruption=NAME[,NAME]|all severity=N[,N]
    corruption_seed=S`` (popped from ``overrides``): None (clean), then each (name, severity, seed)."""
    from benchbone.inputs.corruptions import parse

    asked = [overrides.pop(key, default) for key, default in
             (("corruption", None), ("severity", None), ("corruption_seed", 0))]
    return [c and (c.name, c.severity, c.seed) for c in parse(*asked)]


def split_backbone(name: str) -> tuple[str, bool]:
    """``"resnet50@random"`` -> ("resnet50", False)."""
    if name.endswith(RANDOM_SUFFIX):
        return name[: -len(RANDOM_SUFFIX)], False
    if "@" in name:
        raise UsageError(f"unknown weights suffix in {name!r}; the only suffix is {RANDOM_SUFFIX} (random init)")
    return name, True


def expand(spec: GridSpec, registries: Registries) -> list[Cell]:
    """The cross-product of a grid spec, every name resolved and every parameter checked."""
    for kind, values in (("backbone", spec.backbones), ("dataset", spec.datasets), ("strategy", spec.strategies)):
        if not values:
            raise UsageError(f"no {kind} given; pass --{kind} NAME (see `benchbone list {PLURAL[kind]}`)")
    if spec.seed_count < 1:
        raise UsageError(f"--seeds must be at least 1, not {spec.seeds}")
    weights = resolve_weights(spec, registries)
    backbones: list[tuple[str, bool]] = []
    for pattern in spec.backbones:
        base, pretrained = split_backbone(pattern)
        for name in registries.backbones.resolve([base]):
            meta = registries.backbones.get(name).meta
            if pretrained and meta.get("pretrained") is False and name not in weights:
                why = f" ({meta['description']})" if meta.get("description") else ""
                raise UsageError(f"backbone {name!r} has no pretrained weights here{why}; "
                                 f"ask for {name}{RANDOM_SUFFIX} for random init")
            if (name, pretrained) not in backbones:
                backbones.append((name, pretrained))
    overrides = dict(spec.overrides)
    layers = backbone_layers(overrides, backbones, registries)
    conditions = test_conditions(overrides)
    if layers and weights:
        raise UsageError("--set layer and --weights exclude each other; probe the layers of the named weights' backbone "
                         "without --weights, or drop --set layer")
    datasets = registries.datasets.resolve(spec.datasets)
    data_dirs = {registries.datasets.get(name).name: folder for name, folder in spec.data_dirs.items()}
    stray = sorted(set(data_dirs) - set(datasets))
    if stray:
        raise UsageError(f"[data_dir] names {stray[0]!r}, which is not a dataset of this grid; "
                         f"name one of {', '.join(datasets)}")
    strategies = registries.strategies.resolve(spec.strategies)
    metrics = tuple(registries.metrics.resolve(spec.metrics) if spec.metrics else  # default=False: only when asked
                    [m for m in registries.metrics.registered() if registries.metrics.get(m).meta.get("default", True)])
    if not metrics:
        raise UsageError("no metric is registered; install a metrics plugin or pass --metric NAME")

    harness = dict(HARNESS_DEFAULTS)
    per_strategy = {s: dict(registries.strategies.get(s).params) for s in strategies}
    per_dataset = {d: dict(registries.datasets.get(d).params) for d in datasets}
    for key, value in overrides.items():
        scope, dot, name = key.rpartition(".")
        if dot and scope in registries.strategies:
            scope = registries.strategies.get(scope).name
            if scope not in per_strategy:
                raise UsageError(f"--set {key}: strategy {scope!r} is not in this run")
            targets = [scope]
        else:
            name, targets = key, [s for s in strategies if name in per_strategy[s]]
        if not dot and name in harness:
            harness[name] = coerce(name, value, HARNESS_DEFAULTS[name])
            continue
        if not dot and not targets and any(name in p for p in per_dataset.values()):
            for dataset, params in per_dataset.items():  # a dataset parameter, for each dataset that declares it
                if name in params:
                    params[name] = coerce(name, value, params[name], registries.datasets.get(dataset).types.get(name))
            continue
        if not targets:
            known = sorted({*harness, *(k for p in [*per_strategy.values(), *per_dataset.values()] for k in p)})
            raise UsageError(f"--set {key}: unknown parameter {name!r} for {', '.join(strategies)}; known: {', '.join(known)}")
        for strategy in targets:
            if name not in per_strategy[strategy]:
                raise UsageError(f"--set {key}: strategy {strategy!r} has no parameter {name!r}; "
                                 f"it takes {', '.join(sorted(per_strategy[strategy])) or 'none'}")
            entry = registries.strategies.get(strategy)
            default, kind = entry.params[name], entry.types.get(name)
            if isinstance(value, list) and not isinstance(default, (list, tuple)) and kind not in (list, tuple):
                per_strategy[strategy][name] = Sweep(dict.fromkeys(coerce(key, v, default, kind) for v in value))
            else:  # a sweep above: one cell per value
                per_strategy[strategy][name] = coerce(key, value, default, kind)
    if harness["image_size"] is not None and (not isinstance(harness["image_size"], int) or harness["image_size"] < 8):
        raise UsageError(f"--set image_size={harness['image_size']!r}: give a whole number of pixels >= 8")
    if harness["precision"] not in PRECISIONS:
        raise UsageError(f"--set precision={harness['precision']!r}: use one of {', '.join(PRECISIONS)}")
    if harness["channels_last"] not in (None, True, False):
        raise UsageError(f"--set channels_last={harness['channels_last']!r}: use true, false or none (automatic)")
    if not 0 < harness["val_fraction"] < 1:
        raise UsageError(f"--set val_fraction={harness['val_fraction']}: give a fraction between 0 and 1, e.g. 0.1")
    if harness["batch_size"] < 1:
        raise UsageError(f"--set batch_size={harness['batch_size']}: give a positive number")
    per_class, fraction = harness["train_per_class"], harness["train_fraction"]
    if per_class is not None and fraction is not None:
        raise UsageError("--set train_per_class and --set train_fraction exclude each other; give one of them")
    if per_class is not None and (not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1):
        raise UsageError(f"--set train_per_class={per_class!r}: give a whole number of images per class >= 1")
    test_per_class = harness["test_per_class"]
    if test_per_class is not None and (not isinstance(test_per_class, int) or isinstance(test_per_class, bool)
                                       or test_per_class < 1):
        raise UsageError(f"--set test_per_class={test_per_class!r}: give a whole number of images per class >= 1")
    if fraction is not None and (not isinstance(fraction, (int, float)) or isinstance(fraction, bool)
                                 or not 0 < fraction <= 1):
        raise UsageError(f"--set train_fraction={fraction!r}: give a fraction in (0, 1], e.g. 0.1")
    for name in ("train_size", "val_size"):
        size = harness[name]
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
            raise UsageError(f"--set {name}={size!r}: give a whole number of images >= 1, e.g. {name}="
                             f"{800 if name == 'train_size' else 200}")
    if harness["train_size"] is not None and (per_class is not None or fraction is not None):
        raise UsageError("--set train_size excludes train_per_class and train_fraction; give one of them")
    options = tuple(sorted(harness.items()))
    unused = sorted(set(weights) - {b for b, pretrained in backbones if pretrained})
    if unused:
        raise UsageError(f"--weights {unused[0]}=...: backbone {unused[0]!r} is not in this run (without @random); "
                         f"add it with --backbone {unused[0]}")
    for strategy in strategies:  # a strategy's own checks (``register(..., check=)``), before any cell runs
        check = registries.strategies.get(strategy).check
        if check is not None:
            for params in swept(per_strategy[strategy]):  # each value of a sweep, as its cell will get it
                check(dict(params))
    return [
        Cell(backbone, pretrained, dataset, strategy, seed, params,
             options, metrics, absolute(data_dirs.get(dataset, spec.data_dir)),
             *(weights.get(backbone, (None, None)) if pretrained else (None, None)),
             tuple(sorted(per_dataset[dataset].items())), layer, condition)
        for backbone, pretrained in backbones
        for layer in layers.get(backbone, [None])
        for dataset in datasets
        for condition in conditions
        for seed in range(spec.seed_count)
        for strategy in strategies
        for params in swept(per_strategy[strategy])
    ]


def absolute(path: str | None) -> str | None:
    """A data directory as an absolute path (a worker may start elsewhere); how it was spelled keys nothing."""
    import os

    return os.path.abspath(os.path.expanduser(path)) if path else None


class Sweep(list):
    """The values of a parameter given as a list (``--set shots=1,2,5``) where it takes one value: a cell each."""


def swept(params: dict) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of the swept parameters' values, each as a cell's sorted parameter tuple."""
    import itertools

    keys = [k for k, v in params.items() if isinstance(v, Sweep)]
    return [tuple(sorted({**params, **dict(zip(keys, combo))}.items()))
            for combo in itertools.product(*(params[k] for k in keys))]
