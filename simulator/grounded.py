"""The grounded ToolActor: answers `search` and `open_page` from real documents with BM25.

Documents come from the replica's corpus (the embedded world, fixed at start) or, when a call carries
them (e.g. a HotpotQA task's own context), from that call's document set, indexed once and cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from mtr.task import Document
from simulator.cache import LRUCache


class BackendError(RuntimeError):
    """The actor could not answer a well-formed call (no documents, a bug); reported as BACKEND_ERROR."""


@dataclass(frozen=True)
class DocumentSet:
    """Documents a call is restricted to, with a content key for caching (empty set = the replica corpus)."""

    key: str
    documents: tuple[Document, ...]

    @classmethod
    def of(cls, documents: Sequence[Document]) -> DocumentSet:
        if not documents:
            return CORPUS
        digest = hashlib.sha1()
        for doc in documents:
            for part in (doc.title, doc.text):
                encoded = part.encode("utf-8")
                digest.update(len(encoded).to_bytes(8, "little"))
                digest.update(encoded)
        return cls(key=digest.hexdigest(), documents=tuple(documents))


# The empty document set: the call searches the replica's own corpus.
CORPUS = DocumentSet(key="", documents=())


class BM25Index:
    """BM25 (the `bm25s` library) over title + text, plus case-insensitive exact-title lookup."""

    def __init__(self, documents: Sequence[Document]) -> None:
        import bm25s
        from bm25s.tokenization import Tokenizer

        if not documents:
            raise ValueError("cannot build a BM25 index over zero documents")
        self.documents = tuple(documents)
        self._tokenizer = Tokenizer(stopwords="en")
        corpus_tokens = self._tokenizer.tokenize([f"{d.title}\n{d.text}" for d in self.documents], show_progress=False)
        self._bm25 = bm25s.BM25()
        self._bm25.index(corpus_tokens, show_progress=False)
        self._by_title: dict[str, Document] = {}
        for doc in self.documents:
            self._by_title.setdefault(doc.title.casefold(), doc)

    def search(self, query: str, k: int) -> list[Document]:
        """Top-k documents by BM25; documents that share no word with the query are left out."""
        tokens = self._tokenizer.tokenize([query], update_vocab=False, show_progress=False)
        k = min(k, len(self.documents))
        ids, scores = self._bm25.retrieve(tokens, k=k, show_progress=False, n_threads=0)
        return [self.documents[i] for i, score in zip(ids[0], scores[0], strict=True) if score > 0]

    def page(self, title: str) -> Document | None:
        return self._by_title.get(title.strip().casefold())


class GroundedActor:
    """Executes the library tools against the corpus or a call's own documents."""

    def __init__(
        self,
        corpus: Sequence[Document] = (),
        *,
        top_k: int = 3,
        max_text_chars: int = 2000,
        index_cache_size: int = 256,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self.max_text_chars = max_text_chars
        self._corpus = BM25Index(corpus) if corpus else None
        self._indexes: LRUCache[str, BM25Index] = LRUCache(index_cache_size)

    @property
    def corpus_size(self) -> int:
        return len(self._corpus.documents) if self._corpus else 0

    def run(self, tool: str, arguments: dict, documents: DocumentSet) -> dict:
        """The observation of one call whose name and arguments were already validated."""
        index = self._index(documents)
        if tool == "search":
            hits = index.search(arguments["query"], self.top_k)
            return {"results": [self._render(doc) for doc in hits]}
        if tool == "open_page":
            doc = index.page(arguments["title"])
            if doc is None:
                return {"error": f"open_page: no page titled {arguments['title']!r}; search for the right title first"}
            return self._render(doc)
        raise BackendError(f"the grounded actor has no implementation of tool {tool!r}")

    def _index(self, documents: DocumentSet) -> BM25Index:
        if documents.documents:
            return self._indexes.get_or_create(documents.key, lambda: BM25Index(documents.documents))
        if self._corpus is None:
            raise BackendError("this replica has no corpus and the call carries no documents")
        return self._corpus

    def _render(self, doc: Document) -> dict:
        # Long pages (real benchmark paragraphs) would eat the policy's context; cut them visibly.
        text = doc.text if len(doc.text) <= self.max_text_chars else doc.text[: self.max_text_chars] + " ..."
        return {"title": doc.title, "text": text}
