"""A small bounded LRU map that counts hits and misses.

Used twice: for identical tool calls (so a GRPO group asking the same thing pays once) and for the BM25
indexes of per-request document sets (so a task's documents are indexed once, not once per call).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """Least-recently-used map of at most `capacity` entries; `capacity=0` disables caching.

    Not thread-safe: the server touches it only from its event loop.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        """The cached value (now most recently used), or None; counts a hit or a miss."""
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key]
        self.misses += 1
        return None

    def put(self, key: K, value: V) -> None:
        if self.capacity == 0:
            return
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get_or_create(self, key: K, create: Callable[[], V]) -> V:
        value = self.get(key)
        if value is None:
            value = create()
            self.put(key, value)
        return value


def call_key(tool: str, arguments: dict, document_set_key: str) -> tuple[str, str, str]:
    """Identity of a tool call: argument order and spacing must not split the cache."""
    return tool, json.dumps(arguments, sort_keys=True, ensure_ascii=False), document_set_key
