"""The grounded ToolActor: answers every tool from real documents with BM25, or by exact computation.

Documents come from the replica's corpus (the embedded world, fixed at start) or, when a call carries
them (e.g. a HotpotQA task's own context), from that call's document set, indexed once and cached.
`search`/`open_page` return pages, `lookup` and relation tools (`get_birth_year`, ...) the sentences of
an entity's page stating the fact (and its value), `compare`/`date_diff`/`calculator` compute.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from mtr.task import Document
from simulator.cache import LRUCache
from simulator.compute import ComputeError, calculate, compare_values, date_difference
from simulator.facts import read_fact
from simulator.library import COMPUTED_OPERATIONS, ToolResolver
from simulator.taskspecific import StandardTools


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
    """Executes library, relation and designed tools against the corpus or a call's own documents.

    `tools` says what a tool name means (pass the ToolMaker so tools it designed are answerable); by
    default only the library and the standard relation tools are known.
    """

    def __init__(
        self,
        corpus: Sequence[Document] = (),
        *,
        top_k: int = 3,
        max_text_chars: int = 2000,
        index_cache_size: int = 256,
        tools: ToolResolver | None = None,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.top_k = top_k
        self.max_text_chars = max_text_chars
        self.tools = tools if tools is not None else StandardTools()
        self._corpus = BM25Index(corpus) if corpus else None
        self._indexes: LRUCache[str, BM25Index] = LRUCache(index_cache_size)

    @property
    def corpus_size(self) -> int:
        return len(self._corpus.documents) if self._corpus else 0

    def run(self, tool: str, arguments: dict, documents: DocumentSet) -> dict:
        """The observation of one call whose name and arguments were already validated."""
        spec = self.tools.spec(tool)
        if spec is None:
            raise BackendError(f"the grounded actor has no implementation of tool {tool!r}")
        operation = spec.operation
        if operation in COMPUTED_OPERATIONS:
            return _computed(operation, arguments)
        index = self._index(documents)
        if operation == "search":
            hits = index.search(arguments["query"], self.top_k)
            return {"results": [self._render(doc) for doc in hits]}
        if operation == "open_page":
            doc = index.page(arguments["title"])
            if doc is None:
                return {"error": f"open_page: no page titled {arguments['title']!r}; search for the right title first"}
            return self._render(doc)
        if operation == "lookup":
            return self._lookup(index, tool, arguments["entity"], arguments["relation"], with_value=False)
        if operation == "relation":
            subject = arguments[spec.grounding.subject]
            return self._lookup(index, tool, subject, spec.grounding.relation, with_value=True)
        raise BackendError(f"the grounded actor has no implementation of operation {operation!r} (tool {tool!r})")

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

    def _lookup(self, index: BM25Index, tool: str, entity: str, relation: str, *, with_value: bool) -> dict:
        """The fact on the entity's page (its exact title, else the best pages for its name that state it)."""
        exact = index.page(entity)
        candidates = [exact] if exact is not None else index.search(entity, self.top_k)
        for doc in candidates:
            fact = read_fact(doc.text, relation)
            if fact is None:
                continue
            shown = [_cut(sentence, self.max_text_chars) for sentence in fact.sentences[:_MAX_SENTENCES]]
            about = {"entity": entity, "relation": relation}
            if with_value:
                return about | {"value": fact.value, "evidence": shown, "source": doc.title}
            return about | {"source": doc.title, "sentences": shown}
        if not candidates:
            return {"error": f"{tool}: no page about {entity!r}; search for the right name first"}
        where = f"the page {exact.title!r}" if exact is not None else f"the pages found for {entity!r}"
        return {"error": f"{tool}: found no sentence about {relation!r} on {where}; open the page and read it"}


_MAX_SENTENCES = 3


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " ..."


def _computed(operation: str, arguments: dict) -> dict:
    """compare / date_diff / calculator; a value the policy got wrong is an error observation, not a failure."""
    try:
        if operation == "compare":
            a, b, criterion = arguments["a"], arguments["b"], arguments["criterion"]
            outcome = compare_values(a, b, criterion)
            return {
                "a": a,
                "b": b,
                "criterion": criterion,
                "result": outcome.result,
                "compared_as": outcome.compared_as,
                "explanation": outcome.explanation,
            }
        if operation == "date_diff":
            difference = date_difference(arguments["start"], arguments["end"])
            return {
                "start": str(difference.start),
                "end": str(difference.end),
                "years": difference.years,
                "days": difference.days,
            }
        return {"expression": arguments["expression"], "result": calculate(arguments["expression"])}
    except ComputeError as error:
        return {"error": f"{operation}: {error}"}
