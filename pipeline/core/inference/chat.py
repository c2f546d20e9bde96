"""Chat requests: OpenAI-style messages checked and rendered with a model's chat template.

Where a model directory keeps its template is ``pipeline.core.chat.find_template``'s
business (chat_template.jinja, the tokenizer meta, or the tokenizer's reserved chat tokens);
a directory with none gets its chat requests refused rather than guessed. Rendering is
transformers' own (the sandboxed Jinja environment of ``apply_chat_template``), so a prompt
is byte-for-byte what ``apply_chat_template`` makes.
"""
from __future__ import annotations

ROLES = ("system", "user", "assistant", "tool", "developer")


def check_messages(messages) -> list[dict]:
    """OpenAI-style messages [{"role": ..., "content": str}], or ValueError saying which is wrong."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f"messages[{i}] needs a role, one of {', '.join(ROLES)}")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI's content parts: only text parts can be rendered
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ValueError(f"messages[{i}].content: only text parts are supported")
        elif not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
    return [{**m, "content": m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"])}
            for m in messages]


def render_chat(template: str, messages: list[dict], special_tokens: dict[str, str] | None = None) -> str:
    """The prompt for ``messages``, ending with the assistant's turn opened."""
    from jinja2.exceptions import TemplateError
    from transformers.utils.chat_template_utils import render_jinja_template

    tokens = {f"{k}_token": v for k, v in (special_tokens or {}).items()}
    try:
        rendered, _ = render_jinja_template([check_messages(messages)], chat_template=template,
                                            add_generation_prompt=True, **tokens)
    except TemplateError as err:
        raise ValueError(f"the chat template refused the messages: {err}") from None
    return rendered[0]
