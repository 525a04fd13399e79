"""Helpers of the public plugin API (1.1): what dataset, backbone and strategy plugins need beside the types
exported by ``benchbone``. Every name here is public and kept stable; the modules behind them are not, so a
plugin imports from here (the built-ins in ``plugins/`` do, and a test holds them to it).

- Image folders: ``data_root()``, ``scan_class_folders(root)``, ``load_split_folders(root, splits)``,
  ``ImageFiles`` (a Dataset of image files), ``read_image(path)``, ``IMAGE_SUFFIXES``.
- Weights: ``load_state_dict_file(path)``, ``load_backbone_weights(model, state_dict, classifier)``,
  ``CLASSIFIER_PREFIXES``, ``file_digest(path)``, ``state_digest(model)`` (sha256 of parameters and buffers).
- Atomic saving: ``write_atomic(path, text_or_bytes)``; ``atomic_path(path)``, a context manager giving a
  temporary path to write (``torch.save(state, tmp)``) that replaces ``path`` whole on success.
- Tracker runs: ``run_name(record)`` (``BACKBONE / DATASET / STRATEGY / seed N``) and ``run_slug(record)`` (the
  same as a file name, with the cell id's first 8 digits), as the built-in loggers name a cell's run.
- Offline: ``is_offline(host)``, ``offline_error(name, missing)`` (an ``OfflineError`` saying what to pass);
  ``hub_cached(repo, filenames)``, the path of a file already in the local Hugging Face cache, else None.
- Intermediate layers of timm-style models: ``layer_names(arch)``, ``at_layer(backbone, model, layer)``.

Importing this module does not import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from benchbone.inputs.folders import (
    IMAGE_SUFFIXES,
    ImageFiles,
    data_root,
    load_split_folders,
    read_image,
    scan_class_folders,
)
from benchbone.inputs.hub import hub_cached
from benchbone.inputs.intermediate import at_layer, layer_names
from benchbone.inputs.weights import (
    CLASSIFIER_PREFIXES,
    file_digest,
    is_offline,
    load_backbone_weights,
    load_state_dict_file,
    offline_error,
)
from benchbone.records import atomic_path, run_name, run_slug, write_atomic

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGE_SUFFIXES", "ImageFiles", "data_root", "load_split_folders", "read_image", "scan_class_folders",
    "atomic_path", "write_atomic", "run_name", "run_slug",
    "CLASSIFIER_PREFIXES", "file_digest", "load_backbone_weights", "load_state_dict_file", "state_digest",
    "is_offline", "offline_error", "hub_cached", "layer_names", "at_layer",
]


def state_digest(model: "torch.nn.Module") -> str:
    """sha256 of a model's parameters and buffers (names, dtypes, shapes and bytes): the digest that keys its
    cached features, and the one to compare weights by (e.g. across data-parallel ranks)."""
    from benchbone.inputs.feature_cache import state_digest as digest  # torch, only when called

    return digest(model)
