"""Suite files: a grid written down as TOML (``--suite FILE`` or a built-in suite's name), read into a GridSpec."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tomllib

from benchbone.errors import UsageError
from benchbone.planning.grid import GridSpec

# Where a run goes and what it may fetch: suite keys a flag overrides (--device, --out, --no-download), with their types.
RUN_SETTINGS: dict[str, type] = {"device": str, "out": str, "download": bool}
SUITE_KEYS = {"backbones", "datasets", "strategies", "metrics", "seeds", "set", "data_dir", *RUN_SETTINGS,
              "description", "weights", "expect"}  # expect: published values (benchbone leaderboard --expect)



SUITES_DIR = Path(__file__).parents[1] / "suites"  # the built-in suites, shipped as package data


def suite_file(value: str | Path) -> Path:
    """The path of a suite: a TOML file, or a built-in suite's name (``--suite quickstart``)."""
    text = str(value)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        return Path(value)
    path = SUITES_DIR / f"{text}.toml"
    if not path.is_file():
        builtin = ", ".join(sorted(p.stem for p in SUITES_DIR.glob("*.toml")))
        raise UsageError(f"no built-in suite {text!r} (built-in: {builtin}); pass --suite NAME or a path to a TOML file")
    return path


def load_suite(path: str | Path) -> GridSpec:
    """A suite (a TOML file or a built-in suite's name) as a GridSpec; errors name the file and line."""
    path = suite_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read suite file {path}: {exc.strerror or exc}; pass --suite with a TOML file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"suite file {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); "
                         "save it as UTF-8 TOML") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: malformed TOML: {exc}") from None

    def where(key: str) -> str:
        for number, line in enumerate(text.splitlines(), 1):
            if re.match(rf"\s*\[?\s*{re.escape(key)}\b", line):
                return f"{path}:{number}"
        return str(path)

    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        raise UsageError(f"{where(unknown[0])}: unknown key {unknown[0]!r}; suite keys are {', '.join(sorted(SUITE_KEYS))}")

    def names(key: str) -> list[str]:
        value = data.get(key, [])
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UsageError(f"{where(key)}: {key} must be a list of names")
        return value

    seeds = data.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise UsageError(f"{where('seeds')}: seeds must be a positive integer")
    overrides = data.get("set", {})
    if not isinstance(overrides, dict):
        raise UsageError(f"{where('set')}: [set] must be a table of key = value")
    flat: dict[str, Any] = {}
    for key, value in overrides.items():  # [set.linear-probe] tables become "linear-probe.key"
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    data_dir, data_dirs = data.get("data_dir"), {}
    if isinstance(data_dir, dict):  # [data_dir] cifar10 = "...": one directory per dataset, the others find their own
        if not all(isinstance(v, str) for v in data_dir.values()):
            raise UsageError(f"{where('data_dir')}: [data_dir] must be a table of dataset = \"path\"")
        data_dirs, data_dir = {k: str((path.parent / v).resolve()) for k, v in data_dir.items()}, None
    elif data_dir is not None and not isinstance(data_dir, str):
        raise UsageError(f"{where('data_dir')}: data_dir must be a path in quotes, not {data_dir!r}")
    elif data_dir is not None:
        data_dir = str((path.parent / data_dir).resolve()) if not Path(data_dir).is_absolute() else data_dir
    weights = data.get("weights", {})
    if not isinstance(weights, dict) or not all(isinstance(v, str) for v in weights.values()):
        raise UsageError(f"{where('weights')}: [weights] must be a table of backbone = \"path/to/file.safetensors\"")
    weights = {k: str((path.parent / v).resolve()) for k, v in weights.items()}
    for key, kind in (*RUN_SETTINGS.items(), ("description", str)):
        if key in data and not isinstance(data[key], kind):
            raise UsageError(f"{where(key)}: {key} must be a {'true/false' if kind is bool else 'string'}, "
                             f"not {data[key]!r}")
    settings = {key: data[key] for key in RUN_SETTINGS if key in data}
    if "out" in settings:  # relative to the suite file, as data_dir is
        settings["out"] = str((path.parent / settings["out"]).resolve())
    return GridSpec(names("backbones"), names("datasets"), names("strategies"), names("metrics"), seeds, flat,
                    data_dir, weights, data_dirs, settings)
