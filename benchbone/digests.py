"""The one keyed digest: sha256 of a value written as canonical JSON (sorted keys).

Cell ids, feature-cache keys, record digests and the names index all key by it. It detects damage and tells
contents apart; it is not a signature (anyone can recompute it after editing what it covers).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any


def json_digest(value: Any, *, length: int | None = None, compact: bool = False) -> str:
    """Hex sha256 of ``value`` as JSON with sorted keys (``str`` for what JSON cannot hold), cut to ``length``.

    ``compact`` writes no spaces after separators (the record digest's form); keys already in use keep their
    form, so that earlier ids and caches stay valid.
    """
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":") if compact else None)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
