"""A small bounded LRU map that counts hits and misses, and the msgpack file that persists the call cache.

Used twice: for identical tool calls (so a GRPO group asking the same thing pays once) and for the BM25
indexes of per-request document sets (so a task's documents are indexed once, not once per call). The call
cache can be saved and loaded (`--cache-file`), so a rerun with the same seed sees the same observations even
from a backend that is not deterministic (an LLM actor).
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

CallKey = tuple[str, str, str]
"""(tool name, arguments as canonical JSON, document-set key)."""

CACHE_FILE_FORMAT = "mtr-simulator-call-cache"
CACHE_FILE_VERSION = 1


class CacheFileError(ValueError):
    """A cache file that cannot be read back; the message names the file and what is wrong with it."""


class LRUCache(Generic[K, V]):
    """Least-recently-used map of at most `capacity` entries; `capacity=0` disables caching.

    Thread-safe (one uncontended lock per operation): a replica whose actor waits on I/O answers calls on
    worker threads (`--actor-threads`), and those share this cache.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        # Bumped on every insertion, so a periodic saver can tell whether anything new needs writing.
        self.version = 0
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The cached value (now most recently used), or None; counts a hit or a miss."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            self.version += 1
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def get_or_create(self, key: K, create: Callable[[], V]) -> V:
        """The cached value, else `create()` stored (created outside the lock: two racing threads may both create)."""
        value = self.get(key)
        if value is None:
            value = create()
            self.put(key, value)
        return value

    def items(self) -> list[tuple[K, V]]:
        """A snapshot of the entries, least recently used first (loading them in this order keeps recency)."""
        with self._lock:
            return list(self._entries.items())


def call_key(tool: str, arguments: dict, document_set_key: str) -> CallKey:
    """Identity of a tool call: argument order and spacing must not split the cache."""
    return tool, json.dumps(arguments, sort_keys=True, ensure_ascii=False), document_set_key


def save_call_cache(path: Path, entries: Iterable[tuple[CallKey, str]]) -> int:
    """Write the entries to `path` as msgpack (write then rename: a crash never leaves half a file); returns count."""
    import msgpack

    rows = [[tool, arguments, documents, observation] for (tool, arguments, documents), observation in entries]
    payload = msgpack.packb(
        {"format": CACHE_FILE_FORMAT, "version": CACHE_FILE_VERSION, "entries": rows}, use_bin_type=True
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return len(rows)


def load_call_cache(path: Path) -> list[tuple[CallKey, str]]:
    """The entries of a file written by `save_call_cache`, in saved order; raise CacheFileError if unreadable."""
    import msgpack

    try:
        document = msgpack.unpackb(path.read_bytes(), raw=False)
    except (OSError, ValueError, msgpack.UnpackException) as exc:
        raise CacheFileError(f"call cache file {path} cannot be read: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != CACHE_FILE_FORMAT:
        raise CacheFileError(f"{path} is not a simulator call cache file (no format marker {CACHE_FILE_FORMAT!r})")
    if document.get("version") != CACHE_FILE_VERSION:
        raise CacheFileError(
            f"call cache file {path} has version {document.get('version')!r}; this simulator reads {CACHE_FILE_VERSION}"
        )
    entries = []
    for number, row in enumerate(document.get("entries", [])):
        if not (isinstance(row, list) and len(row) == 4 and all(isinstance(part, str) for part in row)):
            raise CacheFileError(f"call cache file {path}: entry {number} is not four strings: {str(row)[:200]}")
        tool, arguments, documents, observation = row
        entries.append(((tool, arguments, documents), observation))
    return entries


class CallCacheFile:
    """Keeps a replica's call cache in a msgpack file: loaded at start, saved periodically and at shutdown.

    `preload` names files of sibling replicas (a farm gives each replica its own shard): they are loaded
    first and this replica's own file last, so every replica starts from the union of the farm's answers
    and a rerun sees the same observation wherever its call lands. Only `path` is ever written.
    """

    def __init__(self, cache: LRUCache[CallKey, str], path: Path, preload: Iterable[Path] = ()) -> None:
        self.cache = cache
        self.path = path
        self.preload = tuple(preload)
        self._saved_version = -1
        # A periodic save may still be writing on a worker thread when the final one starts.
        self._write_lock = threading.Lock()

    def load(self) -> int:
        """Put every entry of the existing files into the cache; returns how many were read (missing files: 0)."""
        count = 0
        for path in (*self.preload, self.path):
            if not path.exists():
                continue
            entries = load_call_cache(path)
            for key, observation in entries:
                self.cache.put(key, observation)
            count += len(entries)
        self._saved_version = self.cache.version
        return count

    def snapshot(self) -> list[tuple[CallKey, str]] | None:
        """The entries to write, or None when nothing changed since the last save (cheap: a list of references).

        Taken on the thread that owns the cache; the slow part, `write`, may then run on another thread.
        """
        if self.cache.version == self._saved_version:
            return None
        self._saved_version = self.cache.version
        return self.cache.items()

    def write(self, entries: list[tuple[CallKey, str]]) -> int:
        try:
            with self._write_lock:
                return save_call_cache(self.path, entries)
        except BaseException:
            self._saved_version = -1  # not on disk: the next save must try again
            raise

    def save(self) -> int | None:
        """Snapshot and write in one go (at shutdown); returns entries written, or None if nothing changed."""
        entries = self.snapshot()
        return None if entries is None else self.write(entries)
