"""Chat templates: where a model directory keeps one, and rendering messages with it.

Fine-tuning stores the template the way transformers does, so the same file serves our
engine and the Hugging Face ecosystem: ``chat_template.jinja`` (transformers 5) in the model
directory or its ``hf/`` export, else the ``chat_template`` key of ``tokenizer_meta.json`` or
of the export's ``tokenizer_config.json`` (older transformers). A model without one (a base
model) has no chat format: chat requests are refused rather than guessed. Rendering is transformers' own (the sandboxed Jinja environment of
``apply_chat_template``), so a prompt is byte-for-byte what ``apply_chat_template`` makes.
"""
from __future__ import annotations

import json
from pathlib import Path

ROLES = ("system", "user", "assistant", "tool", "developer")


def find_chat_template(model_dir) -> str | None:
    model_dir = Path(model_dir)
    for jinja in (model_dir / "chat_template.jinja", model_dir / "hf" / "chat_template.jinja"):
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
    for config in (model_dir / "tokenizer_meta.json", model_dir / "hf" / "tokenizer_config.json"):
        if config.is_file():
            template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(template, str) and template:
                return template
    return None


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
