"""Weights for plugin authors: local state-dict files, strict loading into a backbone, offline checks.

``load_state_dict_file`` reads .safetensors and .pth/.pt/.bin files (``torch.load(weights_only=True)``
only); ``load_backbone_weights`` loads them into a backbone whose classifier was removed, and raises
a UsageError listing missing or unexpected keys instead of loading part of a network.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import socket
from pathlib import Path
from typing import Any, Iterable

from benchbone.errors import OfflineError, UsageError

SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
STRIPPED_PREFIXES = ("module.", "_orig_mod.")
# Module paths of ImageNet classifiers in torchvision and timm; their keys in a file are ignored.
CLASSIFIER_PREFIXES = ("fc", "classifier", "head", "heads", "last_linear", "_fc")


def file_digest(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


REFUSED = ("it holds code or objects that are not plain tensors, and benchbone refuses to unpickle it")


def _refused_unpickling(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is torch's ``weights_only`` unpickler refusing a file."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def refused_checkpoint(what: str = "checkpoint", advice: str = "delete it (it is downloaded again) or replace it"):
    """Around code that reads checkpoints with ``torch.load(weights_only=True)`` (a plugin's pretrained weights
    from the torch or Hugging Face cache, a ``--weights`` file): torch's warnings while reading stay quiet, and a
    file the unpickler refuses is one UsageError naming it (``torch.load`` is watched for the file it opens),
    without torch's advice to retry with ``weights_only=False``."""
    import warnings

    import torch

    real, opened = torch.load, []

    def load(f, *args, **kwargs):
        opened.append(f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 ...": noise before the one line
            return real(f, *args, **kwargs)

    torch.load = load
    try:
        yield
    except Exception as exc:
        if not _refused_unpickling(exc):
            raise
        name = opened[-1] if opened and isinstance(opened[-1], (str, os.PathLike)) else "a file torch.load read"
        raise UsageError(f"cannot read {what} {name}: {REFUSED}; {advice}") from None
    finally:
        torch.load = real


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """The tensors of a .safetensors or .pth/.pt/.bin state dict, unwrapped from a ``state_dict``/``model`` key."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file {path} does not exist; pass --weights NAME=PATH with an existing file")
    if path.suffix not in SUFFIXES:
        raise UsageError(f"weights file {path} is not one of {', '.join(SUFFIXES)}; save a state dict in one of them")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            with refused_checkpoint("weights file", "save a plain state dict with torch.save(model.state_dict()) "
                                    "or safetensors"):
                state = torch.load(path, map_location="cpu", weights_only=True)
    except UsageError:
        raise
    except Exception as exc:  # truncated file, not a checkpoint at all
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UsageError(f"cannot read weights file {path} ({type(exc).__name__}: {first}); "
                         "save it with torch.save(model.state_dict()) or safetensors") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise UsageError(f"weights file {path} does not hold a state dict of tensors "
                         f"(top-level keys: {', '.join(map(str, list(state)[:5])) if isinstance(state, dict) else type(state).__name__})")
    return state


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPED_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_backbone_weights(model: Any, state_dict: dict[str, Any],
                          classifier: str | Iterable[str] = CLASSIFIER_PREFIXES) -> dict[str, list[str]]:
    """Load ``state_dict`` into ``model`` strictly, ignoring the file's classifier keys.

    ``module.`` prefixes are stripped. Keys under one of the module paths ``classifier`` (a plugin
    passes its own, e.g. ``"classifier.3"``) that the model lacks are ignored; any other missing or unexpected key, or a shape mismatch, raises a UsageError.
    Returns ``{"ignored": [...]}``, the classifier keys that were left out.
    """
    state = {_strip(k): v for k, v in state_dict.items()}
    own = model.state_dict()
    prefixes = tuple(p + "." for p in ([classifier] if isinstance(classifier, str) else classifier))
    extra = [k for k in state if k not in own]
    ignored = [k for k in extra if k.startswith(prefixes)]
    unexpected = [k for k in extra if k not in ignored]
    missing = [k for k in own if k not in state]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing backbone key(s): {_listing(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
        raise UsageError(f"weights do not fit this backbone: {'; '.join(parts)}; "
                         "pass a state dict saved from the same architecture")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        raise UsageError(f"weights do not fit this backbone: {len(wrong)} shape mismatch(es): {_listing(wrong, 4)}; "
                         "pass a state dict saved from the same architecture and variant")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
    return {"ignored": ignored}


def is_offline(host: str, timeout: float = 2.0) -> bool:
    """True when HF_HUB_OFFLINE is set or ``host`` cannot be reached on port 443 within ``timeout``."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return False
    except OSError:
        return True


def offline_error(name: str, missing: str) -> OfflineError:
    """The one-line error for pretrained weights that are neither cached nor downloadable."""
    torch_home = os.environ.get("TORCH_HOME", "~/.cache/torch")
    hf_home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return OfflineError(
        f"pretrained weights for {name} are not cached ({missing}) and cannot be downloaded offline; "
        f"pass --weights {name}=PATH (.safetensors/.pth state dict), fill the cache under TORCH_HOME={torch_home} "
        f"or HF_HOME={hf_home} (HF_HUB_OFFLINE=1 skips the network check), or ask for {name}@random"
    )
