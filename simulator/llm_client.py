"""A JSON-only client of any OpenAI-compatible chat endpoint (e.g. `vllm serve`), for the LLM ToolMaker and actor.

Every request asks for JSON-Schema structured output (`response_format={"type": "json_schema", ...}`), so
a server with constrained decoding returns schema-valid JSON by construction; the answer is parsed and
checked here anyway, since not every server enforces the schema. The decoding schema is a bounded copy
of the real one (strings, arrays and numbers get limits) because a weak model can otherwise write one
string until `max_tokens` and never close the JSON.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass

from mtr.toolschema import instance_errors


class LLMError(RuntimeError):
    """The endpoint failed or answered with something unusable; the message names the endpoint and the fault."""


@dataclass(frozen=True)
class Bounds:
    """Limits the decoding schema adds where the real schema has none."""

    max_string: int = 400
    max_items: int = 5
    max_number: int = 10**12


class LLMClient:
    """Chat completions that must come back as one JSON object matching a schema.

    `url` is the server's base URL ("http://127.0.0.1:8000", with or without "/v1"). The API key comes
    from `api_key`, else the OPENAI_API_KEY environment variable, else a placeholder (vLLM needs none).
    Retries are the caller's business (they decide what counts as a bad answer), so the SDK's are off.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_tokens: int = 512,
        temperature: float = 0.0,
        bounds: Bounds = Bounds(),
    ) -> None:
        import openai

        if not model:
            raise ValueError("LLMClient needs a model name (the one the endpoint serves)")
        base = url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.bounds = bounds
        key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout_s, max_retries=0)

    def chat_json(self, messages: list[dict], schema: dict, *, name: str, max_tokens: int | None = None) -> dict:
        """The model's answer as a dict valid against `schema`; raise LLMError otherwise."""
        import openai

        where = f"LLM endpoint {self.base_url} (model {self.model!r})"
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": bounded_schema(schema, self.bounds), "strict": True},
        }
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=max_tokens or self.max_tokens,
                temperature=self.temperature,
                response_format=response_format,
            )
        except openai.OpenAIError as error:
            raise LLMError(f"{where}: request failed: {type(error).__name__}: {error}") from error
        choice = response.choices[0]
        content = choice.message.content or ""
        if choice.finish_reason == "length":
            raise LLMError(f"{where}: the answer hit max_tokens before the JSON was complete: {content[:120]!r}")
        return _parse(content, schema, where)


def _parse(content: str, schema: dict, where: str) -> dict:
    try:
        value = json.loads(content)
    except json.JSONDecodeError as error:
        raise LLMError(f"{where}: the answer is not JSON ({error}): {content[:120]!r}") from None
    if not isinstance(value, dict):
        raise LLMError(f"{where}: the answer is JSON but not an object: {content[:120]!r}")
    errors = instance_errors(schema, value)
    if errors:
        raise LLMError(f"{where}: the answer breaks its schema: {'; '.join(errors[:3])}")
    return value


def bounded_schema(schema: dict, bounds: Bounds = Bounds()) -> dict:
    """A copy of `schema` with limits on every unbounded string, array and number (only ever narrower)."""
    bounded = copy.deepcopy(schema)
    _bound(bounded, bounds)
    return bounded


def _bound(node: object, bounds: Bounds) -> None:
    if isinstance(node, list):
        for item in node:
            _bound(item, bounds)
        return
    if not isinstance(node, dict):
        return
    types = node.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if "string" in types:
        node.setdefault("maxLength", bounds.max_string)
    if "array" in types:
        node.setdefault("maxItems", bounds.max_items)
    if types & {"integer", "number"}:
        node.setdefault("minimum", -bounds.max_number)
        node.setdefault("maximum", bounds.max_number)
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            for child in value.values():
                _bound(child, bounds)
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties", "prefixItems"):
            _bound(value, bounds)
