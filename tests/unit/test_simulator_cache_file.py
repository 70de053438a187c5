"""The call cache survives a restart through its msgpack file, in LRU order, and refuses files it cannot trust."""

from __future__ import annotations

import msgpack
import pytest

from simulator.cache import CacheFileError, CallCacheFile, LRUCache, load_call_cache, save_call_cache

_ENTRIES = [
    (("search", '{"query": "Alba"}', ""), '{"results": []}'),
    (("open_page", '{"title": "Ünïcode"}', "abc123"), '{"title": "Ünïcode", "text": "ü"}'),
]


def test_round_trip_keeps_entries_and_order(tmp_path):
    path = tmp_path / "sub" / "calls.msgpack"
    assert save_call_cache(path, _ENTRIES) == 2
    assert load_call_cache(path) == _ENTRIES
    assert [p.name for p in path.parent.iterdir()] == ["calls.msgpack"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1garbage", "cannot be read"),
        (msgpack.packb({"entries": []}), "not a simulator call cache"),
        (msgpack.packb({"format": "mtr-simulator-call-cache", "version": 99, "entries": []}), "version 99"),
        (msgpack.packb({"format": "mtr-simulator-call-cache", "version": 1, "entries": [["a", 1]]}), "entry 0"),
    ],
)
def test_bad_files_are_refused_naming_the_file(tmp_path, payload, message):
    path = tmp_path / "bad.msgpack"
    path.write_bytes(payload)
    with pytest.raises(CacheFileError, match=message) as error:
        load_call_cache(path)
    assert "bad.msgpack" in str(error.value)


def test_load_fills_the_cache_and_a_save_without_news_is_skipped(tmp_path):
    path = tmp_path / "calls.msgpack"
    save_call_cache(path, _ENTRIES)
    cache: LRUCache = LRUCache(10)
    persisted = CallCacheFile(cache, path)
    assert persisted.load() == 2
    assert cache.get(_ENTRIES[1][0]) == _ENTRIES[1][1]
    assert persisted.save() is None
    cache.put(("search", '{"query": "new"}', ""), '{"results": []}')
    assert persisted.save() == 3
    assert load_call_cache(path)[-1][0] == ("search", '{"query": "new"}', "")


def test_a_missing_file_is_an_empty_start(tmp_path):
    cache: LRUCache = LRUCache(10)
    assert CallCacheFile(cache, tmp_path / "absent.msgpack").load() == 0
    assert len(cache) == 0


def test_sibling_shards_are_preloaded_and_the_own_file_wins(tmp_path):
    key = ("search", '{"query": "q"}', "")
    own, sibling, other = tmp_path / "own.msgpack", tmp_path / "sibling.msgpack", tmp_path / "other.msgpack"
    save_call_cache(sibling, [(key, "sibling's"), (("search", '{"query": "s"}', ""), "only sibling")])
    save_call_cache(own, [(key, "own")])
    cache: LRUCache = LRUCache(10)
    assert CallCacheFile(cache, own, preload=[sibling, other]).load() == 3
    assert cache.get(key) == "own"
    assert cache.get(("search", '{"query": "s"}', "")) == "only sibling"


def test_loading_more_than_the_capacity_keeps_the_most_recent(tmp_path):
    path = tmp_path / "calls.msgpack"
    save_call_cache(path, [((f"t{i}", "{}", ""), str(i)) for i in range(5)])
    cache: LRUCache = LRUCache(2)
    CallCacheFile(cache, path).load()
    assert [key[0] for key, _ in cache.items()] == ["t3", "t4"]


def test_a_failed_write_is_retried_by_the_next_save(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache: LRUCache = LRUCache(10)
    cache.put(_ENTRIES[0][0], _ENTRIES[0][1])
    persisted = CallCacheFile(cache, blocker / "calls.msgpack")
    with pytest.raises(OSError):
        persisted.save()
    persisted.path = tmp_path / "calls.msgpack"
    assert persisted.save() == 1
