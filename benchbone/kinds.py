"""The plugin kinds, declared once: singular for messages, plural for ``benchbone list`` and the hooks."""
from __future__ import annotations

KINDS = {"backbone": "backbones", "dataset": "datasets", "strategy": "strategies", "metric": "metrics",
         "estimator": "estimators"}
PLURALS = tuple(KINDS.values())


def plural(kind: str) -> str:
    """``"strategy"`` -> ``"strategies"``."""
    return KINDS[kind]

