"""Weights already on disk: the local Hugging Face cache, looked in before any network access."""
from __future__ import annotations


def hub_cached(repo: str, filenames) -> str | None:
    """The path of the first of ``filenames`` in the local Hugging Face cache, if any."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return found
    return None
