"""The chat template every MTR checkpoint carries: the trace grammar, as Jinja, for OpenAI-style serving.

A trained policy is only useful if users can serve it as they serve models: `vllm serve CKPT
--enable-auto-tool-choice --tool-call-parser hermes` renders each request through the tokenizer's
`chat_template`, and a client sends `tools`, assistant `tool_calls` and `tool` messages. This template renders
them byte for byte as `mtr.grammar.render` does (tested against stored traces), so a served policy sees the
prompts it was trained on, and its `<tool_call>{...}</tool_call>` output is what the hermes parser reads.

Differences from the grammar's own data model, handled here: tool-call arguments arrive as a JSON string (as
the OpenAI API sends them) or already parsed (vLLM parses them for templates); a missing system message means
the grammar's default system prompt; the assistant header follows every user and tool message (the grammar's
prompt ends in it), so `add_generation_prompt` adds nothing more.
"""

from __future__ import annotations

from mtr.grammar import DEFAULT_SYSTEM_PROMPT, IM_END, IM_START

_TEMPLATE = (
    "{%- set system = default_system -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}{%- endif -%}"
    "{{- im_start + 'system\\n' + system + '\\n<tools>\\n' -}}"
    "{{- ((tools or []) | tojson) + '\\n</tools>' + im_end + '\\n' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- im_start + 'user\\n' + message['content'] + im_end + '\\n' + im_start + 'assistant\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- message['content'] or '' -}}"
    "{%- for call in (message['tool_calls'] or [])[:1] -%}"
    "{%- set arguments = call['function']['arguments'] -%}"
    "{{- '\\n<tool_call>{\"name\": ' + (call['function']['name'] | tojson) + ', \"arguments\": ' -}}"
    "{%- if arguments is string -%}{{- arguments -}}{%- else -%}{{- arguments | tojson -}}{%- endif -%}"
    "{{- '}</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- im_end -}}"
    "{%- elif message['role'] == 'tool' -%}"
    "{{- '\\n' + im_start + 'tool\\n<tool_response>' + message['content'] + '</tool_response>' + im_end + '\\n' -}}"
    "{{- im_start + 'assistant\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def _literal(text: str) -> str:
    """`text` as a Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


CHAT_TEMPLATE = (
    "{%- set im_start = " + _literal(IM_START) + " -%}"
    "{%- set im_end = " + _literal(IM_END) + " -%}"
    "{%- set default_system = " + _literal(DEFAULT_SYSTEM_PROMPT) + " -%}" + _TEMPLATE
)


def apply_to(tokenizer) -> None:
    """Give `tokenizer` the MTR chat template (saved with it into every checkpoint)."""
    tokenizer.chat_template = CHAT_TEMPLATE
