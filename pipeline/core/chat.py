"""The chat format: one Jinja chat template, stored with the tokenizer, rendered by transformers.

    <|bos|><|system|>Be brief.<|end|><|user|>What is 2 + 3?<|end|><|assistant|>5<|end|>

The template is written the way the Hugging Face ecosystem reads one: the tokenize stage puts
it into meta.json (``chat_template``; every model directory keeps that file as
tokenizer_meta.json), model directories that fine-tuning writes also hold
``chat_template.jinja``, and the transformers export carries it in its tokenizer files — so
``AutoTokenizer.apply_chat_template`` works on an exported model. The assistant's content and
its end-of-turn marker sit inside ``{% generation %}`` markers: ``return_assistant_tokens_mask``
(TRL's ``assistant_only_loss``) and ``encode_chat`` below give the same mask, and the model
is trained to stop.

    tok = hf_tokenizer("results/finetune/<key>")
    ids, mask = encode_chat(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.core.errors import StageError

ROLES = ("system", "user", "assistant")
TEMPLATE_FILE = "chat_template.jinja"
META_FILES = ("tokenizer_meta.json", "meta.json")  # a model directory's, a tokenize directory's


def chat_template(markers: list[str]) -> str:
    """The template for the chat tokens ``[system, user, assistant, end]`` (tokenize.chat_tokens)."""
    if len(markers) != 4:
        raise StageError(f"tokenize.chat_tokens: expected 4 tokens (system, user, assistant, end), got {markers}")
    system, user, assistant, end = markers
    return (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}" + system + "{{ message['content'] }}" + end +
        "{% elif message['role'] == 'user' %}" + user + "{{ message['content'] }}" + end +
        "{% elif message['role'] == 'assistant' %}" + assistant +
        "{% generation %}{{ message['content'] }}" + end + "{% endgeneration %}"
        "{% else %}{{ raise_exception('unknown role ' + message['role'] + ': use system, user or assistant') }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}" + assistant + "{% endif %}"
    )


def _meta(model_dir: Path) -> dict:
    for name in META_FILES:
        if (model_dir / name).is_file():
            return json.loads((model_dir / name).read_text(encoding="utf-8"))
    return {}


def find_template(model_dir) -> str | None:
    """The chat template of a model or tokenize directory: chat_template.jinja (here or in its
    hf/ export), the tokenizer meta's, or one built from the chat tokens the tokenizer reserves."""
    model_dir = Path(model_dir)
    for folder in (model_dir, model_dir / "hf"):
        if (folder / TEMPLATE_FILE).is_file():
            return (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
    meta = _meta(model_dir)
    if meta.get("chat_template"):
        return meta["chat_template"]
    markers = list((meta.get("special_tokens") or {}).get("chat") or {})
    return chat_template(markers) if len(markers) == 4 else None


def end_token(model_dir) -> str | None:
    """The end-of-turn marker (generation stops at it): the last chat token."""
    markers = list((_meta(Path(model_dir)).get("special_tokens") or {}).get("chat") or {})
    return markers[-1] if markers else None


def special_strings(model_dir) -> dict[str, str]:
    """bos/eos/pad strings of the tokenizer (tokenize's special_token_strings)."""
    return dict(_meta(Path(model_dir)).get("special_token_strings") or {})


def hf_tokenizer(model_dir, template: str | None = None):
    """The directory's tokenizer.json as a transformers tokenizer with its specials and chat template."""
    from transformers import PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    template = template or find_template(model_dir)
    if template is None:
        raise StageError(f"{model_dir}: no chat template and no chat tokens in its tokenizer "
                         f"(tokenize.chat_tokens reserves them); cannot format conversations")
    specials = {f"{k}_token": v for k, v in special_strings(model_dir).items()}
    tok = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"), **specials)
    tok.chat_template = template
    return tok


def encode_chat(tok, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(token ids, 1 on the assistant's tokens incl. its end marker) of a whole conversation."""
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return list(out["input_ids"]), list(out["assistant_masks"])


def encode_prompt(tok, messages: list[dict]) -> list[int]:
    """Token ids of the conversation so far with the assistant's turn opened (what generation continues)."""
    out = tok.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=True)
    return list(out["input_ids"])


def render_prompt(tok, messages: list[dict]) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def write_template(out: Path, template: str) -> None:
    (Path(out) / TEMPLATE_FILE).write_text(template, encoding="utf-8")
