"""Helpers of the public plugin API (1.1): what dataset, backbone and strategy plugins need beside the types
exported by ``benchbone``. Every name here is public and kept stable; the modules behind them are not, so a
plugin imports from here (the built-ins in ``plugins/`` do, and a test holds them to it).

- Image folders: ``data_root()``, ``scan_class_folders(root)``, ``load_split_folders(root, splits)``,
  ``ImageFiles`` (a Dataset of image files), ``read_image(path)``, ``IMAGE_SUFFIXES``.
- Weights: ``load_state_dict_file(path)``, ``load_backbone_weights(model, state_dict, classifier)``,
  ``CLASSIFIER_PREFIXES``, ``file_digest(path)``, ``state_digest(model)`` (sha256 of parameters and buffers).
- Atomic saving: ``write_atomic(path, text_or_bytes)``; ``atomic_path(path)``, a context manager giving a
  temporary path to write (``torch.save(state, tmp)``) that replaces ``path`` whole on success.
- Offline: ``is_offline(host)``, ``offline_error(name, missing)`` (an ``OfflineError`` saying what to pass).

Importing this module does not import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from benchbone.folders import IMAGE_SUFFIXES, ImageFiles, data_root, load_split_folders, read_image, scan_class_folders
from benchbone.records import atomic_path, write_atomic
from benchbone.weights import (CLASSIFIER_PREFIXES, file_digest, is_offline, load_backbone_weights,
                               load_state_dict_file, offline_error)

if TYPE_CHECKING:
    import torch

__all__ = [
    "IMAGE_SUFFIXES", "ImageFiles", "data_root", "load_split_folders", "read_image", "scan_class_folders",
    "atomic_path", "write_atomic",
    "CLASSIFIER_PREFIXES", "file_digest", "load_backbone_weights", "load_state_dict_file", "state_digest",
    "is_offline", "offline_error",
]


def state_digest(model: "torch.nn.Module") -> str:
    """sha256 of a model's parameters and buffers (names, dtypes, shapes and bytes): the digest that keys its
    cached features, and the one to compare weights by (e.g. across data-parallel ranks)."""
    from benchbone.features import state_digest as digest  # torch, only when called

    return digest(model)
