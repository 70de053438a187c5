from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(_message.Message):
    __slots__ = ("id", "question", "answers", "documents", "decomposition", "hops", "question_type", "source", "tools_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    DECOMPOSITION_FIELD_NUMBER: _ClassVar[int]
    HOPS_FIELD_NUMBER: _ClassVar[int]
    QUESTION_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TOOLS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    question: str
    answers: _containers.RepeatedScalarFieldContainer[str]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    decomposition: _containers.RepeatedCompositeFieldContainer[Hop]
    hops: int
    question_type: str
    source: str
    tools_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., question: _Optional[str] = ..., answers: _Optional[_Iterable[str]] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ..., decomposition: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., hops: _Optional[int] = ..., question_type: _Optional[str] = ..., source: _Optional[str] = ..., tools_json: _Optional[_Iterable[str]] = ...) -> None: ...

class Document(_message.Message):
    __slots__ = ("title", "text")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    title: str
    text: str
    def __init__(self, title: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class Hop(_message.Message):
    __slots__ = ("question", "answer", "subject", "relation")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    RELATION_FIELD_NUMBER: _ClassVar[int]
    question: str
    answer: str
    subject: str
    relation: str
    def __init__(self, question: _Optional[str] = ..., answer: _Optional[str] = ..., subject: _Optional[str] = ..., relation: _Optional[str] = ...) -> None: ...
