"""The feature cache on disk: content-addressed entries (a safetensors header and an .npy of rows), streamed in chunks, checked on read, safe under concurrent writers."""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchbone.digests import json_digest
from benchbone.records import atomic_path


def full_key(description: dict) -> str:
    """The sha256 of everything that determines a cache file's content: written into the file, checked on read."""
    return json_digest(description)


def feature_key(description: dict) -> str:
    """A stable file name for features from everything that determines them (the start of ``full_key``)."""
    return full_key(description)[:32]


def state_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's parameters and buffers (names, dtypes, shapes and bytes): what its features depend on."""
    h = hashlib.sha256()
    for name, tensor in itertools.chain(model.named_parameters(), model.named_buffers()):  # non-persistent ones too
        tensor = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _digest(tensors: dict[str, torch.Tensor], key: str) -> str:
    h = hashlib.sha256(key.encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


FORMAT = "2"  # a safetensors header file plus an .npy of rows; format 1 (no "format" in the header) held all in one file


HASH_CHUNK = 1 << 24  # bytes hashed at a time when a rows file is checked


_WARNED: set[str] = set()  # cache directories already reported as unwritable, so each is reported once


_CHECKED: dict[tuple, str] = {}  # (path, inode, size, mtime) of rows files whose digest this process checked


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def _identity(path: Path) -> tuple:
    st = os.stat(path)
    return str(path), st.st_ino, st.st_size, st.st_mtime_ns


def _rows_digest(path: Path, offset: int) -> str:
    """xxh3-128 of a file's bytes from ``offset`` on, read in chunks into one buffer (no copy of the file in memory)."""
    import xxhash

    h, buffer = xxhash.xxh3_128(), bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        f.seek(offset)
        while n := f.readinto(buffer):
            h.update(view[:n])
    return h.hexdigest()


class RowsInMemory:
    """Rows of a [N, D] float32 array filled in order, in memory: where features go without a cache."""

    def __init__(self, shape: tuple[int, int]):
        self.array = torch.empty(shape, dtype=torch.float32)
        self.rows = 0

    def write(self, rows: torch.Tensor) -> None:
        self.array[self.rows:self.rows + len(rows)] = rows
        self.rows += len(rows)

    def finish(self) -> None:
        return None

    def result(self) -> torch.Tensor:
        return self.array


class RowsFile:
    """Rows of a [N, D] float32 array written in order to an .npy file and hashed (xxh3-128) as they come.

    Host memory holds one chunk at a time. A write the disk refuses (full, gone read-only) calls
    ``on_error`` and moves the rows written so far and the rest into memory, so the numbers are the same.
    """

    def __init__(self, path: Path, shape: tuple[int, int], on_error: Callable[[OSError, int], None]):
        import xxhash

        self.path, self.shape, self.on_error = Path(path), tuple(shape), on_error
        header = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=self.shape)
        self.offset = header.offset
        del header
        self._file = open(self.path, "r+b", buffering=0)
        self._file.seek(self.offset)
        self._hash = xxhash.xxh3_128()
        self.rows = 0
        self.memory: RowsInMemory | None = None

    def write(self, rows: torch.Tensor) -> None:
        if self.memory is not None:
            return self.memory.write(rows)
        data = memoryview(np.ascontiguousarray(rows.numpy(), dtype=np.float32)).cast("B")
        try:
            done = 0
            while done < len(data):
                done += self._file.write(data[done:])
        except OSError as exc:
            self._to_memory(exc)
            return self.memory.write(rows)
        self._hash.update(data)
        self.rows += len(rows)

    def close(self) -> None:
        self._file.close()

    def _to_memory(self, exc: OSError) -> None:
        self.on_error(exc, int(np.prod(self.shape)) * 4)
        self.memory = RowsInMemory(self.shape)
        self.close()
        if self.rows:
            written = np.fromfile(self.path, dtype=np.float32, count=self.rows * self.shape[1], offset=self.offset)
            self.memory.write(torch.from_numpy(written.reshape(self.rows, self.shape[1])))

    def finish(self) -> dict | None:
        """What the header file records of the rows (shape, dtype, digest), or None when they went to memory."""
        if self.memory is not None:
            return None
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.rows} rows of features written, {self.shape[0]} expected")
        self.close()
        return {"shape": list(self.shape), "dtype": "float32", "xxh3_128": self._hash.hexdigest()}

    def result(self) -> torch.Tensor:
        """The rows, once a refused write moved them into memory."""
        return self.memory.result()


class _NotKept(Exception):
    """Carries an entry computed in memory out of the block that would otherwise publish its rows file."""


class FeatureStore:
    """A content-addressed directory of cache entries, safe for concurrent writers (write, then rename).

    An entry is ``<key>.safetensors``: small tensors (labels, timings, decoded images) and a header that
    carries the full key it was written for and a sha256 of that key, its tensors and the description of
    its rows file. Features live beside it in ``<key>.npy`` (float32 [N, D]), written in chunks and read
    back as a memory map; its xxh3-128 digest, computed while writing, is checked on the first read in a
    process. The rows file is renamed into place before the header file, so a reader that finds the
    header finds its rows. An entry that fails a check is reported, removed and rebuilt. One lock file per
    key makes runs sharing the directory compute each entry once (``fcntl.flock`` through ``filelock``:
    the kernel releases the lock of a process that dies, so a stale lock is simply taken over). A
    directory that cannot be written is reported once; the run then goes on without writing to it.
    """

    def __init__(self, root: Path | None, folder: str = "features"):
        self.root = Path(root) if root else None
        self.folder = folder
        self.writable = self.root is not None
        self.mapped: set[str] = set()  # keys whose rows this store maps from disk (checked)

    def path(self, key: str) -> Path:
        return self.root / self.folder / f"{key}.safetensors"

    def rows_path(self, key: str) -> Path:
        return self.root / self.folder / f"{key}.npy"

    def load(self, key: str, description: dict | None = None) -> dict[str, torch.Tensor] | None:
        """The stored tensors, or None when absent or damaged (a damaged entry is removed).

        With ``description``, the entry must have been written for exactly that description; without, for
        the key its name says. Its rows (``features``) come as a CPU tensor over a private memory map of
        the rows file (copy-on-write: a strategy that writes into it changes neither the file nor other readers).
        """
        if self.root is None or not self.path(key).exists():
            return None
        from safetensors import safe_open

        path = self.path(key)
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                written_for = meta.get("key")
                if written_for is None or meta.get("format") != FORMAT:
                    raise ValueError("no key or format in its header: written by an older benchbone")
                expected = full_key(description) if description is not None else None
                if written_for[:32] != key or (expected is not None and written_for != expected):
                    raise ValueError(f"written for key {written_for[:32]}, not {key}: a copied or renamed file")
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            rows = meta.get("rows", "")
            if meta.get("sha256") != _digest(tensors, written_for + rows):
                raise ValueError("digest mismatch")
            if rows:
                rows = json.loads(rows)
                tensors[rows["name"]] = self._open_rows(key, rows)
            return tensors
        except Exception as exc:  # truncated, corrupted or another key's: never read as numbers
            _warn(f"cache file {path} is damaged ({exc}); recomputing it")
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
                self.rows_path(key).unlink(missing_ok=True)
            return None

    def _open_rows(self, key: str, rows: dict) -> torch.Tensor:
        """The rows file of ``key`` as a copy-on-write memory map, its shape, dtype and digest checked."""
        path = self.rows_path(key)
        try:
            array = np.load(path, mmap_mode="c")
        except (OSError, ValueError) as exc:
            raise ValueError(f"its rows file {path.name} is missing or unreadable ({exc})") from None
        if list(array.shape) != rows["shape"] or str(array.dtype) != rows["dtype"]:
            raise ValueError(f"its rows file {path.name} holds {array.dtype} {list(array.shape)}, not "
                             f"{rows['dtype']} {rows['shape']}")
        identity = _identity(path)
        if _CHECKED.get(identity) != rows["xxh3_128"]:
            if _rows_digest(path, array.offset) != rows["xxh3_128"]:
                raise ValueError(f"digest mismatch in its rows file {path.name}")
            _CHECKED[identity] = rows["xxh3_128"]
        self.mapped.add(key)
        return torch.from_numpy(array)

    def reopen(self, key: str) -> torch.Tensor | None:
        """A fresh private memory map of ``key``'s rows, what one strategy may write into; None unless the file
        is still the one this process checked (another run may have replaced or removed it since)."""
        if key not in self.mapped:
            return None
        path = self.rows_path(key)
        with contextlib.suppress(OSError, ValueError):
            if _identity(path) in _CHECKED:
                return torch.from_numpy(np.load(path, mmap_mode="c"))
        return None

    def _cannot_write(self, exc: OSError, size: int | None = None) -> None:
        """Report once that the cache directory cannot be written, and stop writing to it."""
        self.writable = False
        where = str(self.root)
        if where not in _WARNED:
            _WARNED.add(where)
            needed = f"; {size:,} bytes needed" if size is not None else ""
            _warn(f"cache directory {where} cannot be written ({exc.strerror or exc}{needed}); running without "
                  "caching new results (pass --cache-dir with a writable directory that has free space, or "
                  "--no-cache to run without a cache)")

    def check_writable(self) -> bool:
        """Whether entries can be written here; the first failure is reported (see ``_cannot_write``)."""
        if not self.writable:
            return False
        try:
            folder = self.root / self.folder
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as exc:
            self._cannot_write(exc)
        return self.writable

    def save(self, key: str, tensors: dict[str, torch.Tensor], description: dict, rows: dict | None = None) -> bool:
        """Write the header file of ``key`` (``rows``: what ``RowsFile.finish`` said of its rows file); whether it was kept."""
        if not self.writable:
            return False
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in tensors.items()}
        written_for = full_key(description)
        described = json.dumps(rows, sort_keys=True) if rows else ""
        meta = {"format": FORMAT, "sha256": _digest(tensors, written_for + described), "key": written_for,
                "description": json.dumps(description, sort_keys=True, default=str), "rows": described}
        try:
            with atomic_path(self.path(key)) as tmp:
                save_file(tensors, str(tmp), metadata=meta)
            return True
        except OSError as exc:  # a full or read-only disk: the numbers are right, only not kept
            self._cannot_write(exc, sum(t.numel() * t.element_size() for t in tensors.values()))
            return False

    @contextlib.contextmanager
    def claim(self, key: str):
        """Hold the lock of ``key`` while computing it; waits while another process holds it."""
        if not self.check_writable():
            yield
            return
        from filelock import FileLock

        lock = FileLock(str(self.path(key)) + ".lock")
        try:
            lock.acquire()
        except OSError as exc:
            self._cannot_write(exc)
            yield
            return
        try:
            yield
        finally:
            lock.release()

    def get_or_compute(self, description: dict, compute: Callable, shape: tuple[int, int],
                       name: str = "features") -> dict[str, torch.Tensor]:
        """The stored entry of ``description``, else ``compute(rows)`` (stored); computed once across runs sharing the store.

        ``compute`` writes the ``shape`` rows (float32) of ``name`` in order with ``rows.write(tensor)`` and
        returns the entry's other (small) tensors.
        """
        key = feature_key(description)
        tensors = self.load(key, description)
        if tensors is not None:
            return tensors
        with self.claim(key):
            tensors = self.load(key, description)  # another run may have finished it while we waited
            if tensors is None:
                tensors = self._compute(key, description, compute, tuple(shape), name)
        return tensors

    def _compute(self, key: str, description: dict, compute: Callable, shape: tuple[int, int], name: str) -> dict:
        """Compute an entry, its rows streamed to a temporary file that is renamed into place, then its header."""
        size = int(np.prod(shape)) * 4
        try:
            with contextlib.ExitStack() as stack:
                rows = self._rows_sink(stack, key, shape, size)
                tensors = compute(rows)  # a plugin's error propagates; the stack removes the temporary file
                described = rows.finish()
                if described is None:  # no cache, or the disk refused a write: the rows are in memory
                    raise _NotKept({**tensors, name: rows.result()})  # and the temporary file goes
                mapped = torch.from_numpy(np.load(rows.path, mmap_mode="c"))  # stays readable if the file goes
                try:
                    stack.close()  # fsync, then rename into place
                except OSError as exc:
                    self._cannot_write(exc, size)
                    return {**tensors, name: mapped}
        except _NotKept as computed:
            return computed.args[0]
        rows_path = self.rows_path(key)
        if not self.save(key, tensors, description, {**described, "name": name}):
            rows_path.unlink(missing_ok=True)  # no header, no entry: nothing half-written is left
            return {**tensors, name: mapped}
        _CHECKED[_identity(rows_path)] = described["xxh3_128"]
        self.mapped.add(key)
        return {**tensors, name: mapped}

    def _rows_sink(self, stack: contextlib.ExitStack, key: str, shape: tuple[int, int], size: int):
        """A ``RowsFile`` at a temporary name (removed by ``stack`` unless it closes normally), or ``RowsInMemory``
        when nothing can be written here."""
        if self.writable:
            try:
                rows = RowsFile(stack.enter_context(atomic_path(self.rows_path(key))), shape, self._cannot_write)
                stack.callback(rows.close)  # runs before the rename
                return rows
            except OSError as exc:
                self._cannot_write(exc, size)
        return RowsInMemory(shape)
