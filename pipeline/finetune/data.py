"""Fine-tuning data: the built-in generated tasks, local JSONL/Parquet files, Hugging Face datasets.

Each method reads one kind of example:

    conversation   {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}
                   (sft, lora, prompt, prefix)
    pair           {"prompt": str | messages, "chosen": str | messages, "rejected": str | messages}
                   (dpo, reward; TRL's preference format, plain or conversational)
    prompt         {"prompt": str | messages, "answer": str}   (rl; the answer is what task rewards check)

A record that cannot be used is set aside with a reason — ``no_assistant_turn``,
``unknown_role``, ``empty_message``, ``missing_field``, ``empty_completion``,
``identical_pair`` (and ``too_long`` once tokenized) — and counted in the stats.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.chat import ROLES
from pipeline.core.errors import StageError
from pipeline.core.tasks import generated

KIND = {"sft": "conversation", "lora": "conversation", "prompt": "conversation", "prefix": "conversation",
        "dpo": "pair", "reward": "pair", "rl": "prompt"}
VALIDATION_FRACTION = 0.05  # of a file's records, by id hash, for the validation loss


@dataclass
class Examples:
    train: list[dict]
    validation: list[dict]  # the validation loss during training
    heldout: dict[str, list[dict]] = field(default_factory=dict)  # generated task -> held-out problems
    records_in: int = 0
    dropped: Counter = field(default_factory=Counter)


def _as_messages(value, role: str) -> list[dict] | None:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return value if isinstance(value, list) else None


def check_conversation(messages) -> str | None:
    """The reason a conversation cannot be trained on, or None."""
    if not isinstance(messages, list) or not messages:
        return "missing_field"
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return "unknown_role"
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return "empty_message"
    if not any(m["role"] == "assistant" for m in messages):
        return "no_assistant_turn"
    return None


def normalize(record: dict, kind: str) -> tuple[dict | None, str | None]:
    """(the example, None) or (None, the reason it is set aside)."""
    if kind == "conversation":
        why = check_conversation(record.get("messages"))
        return (None, why) if why else ({"messages": record["messages"]}, None)
    prompt = _as_messages(record.get("prompt"), "user")
    if prompt is None or not prompt:
        return None, "missing_field"
    why = check_conversation(prompt + [{"role": "assistant", "content": "x"}])
    if why:
        return None, why
    if kind == "prompt":
        return {"prompt": prompt, "answer": str(record.get("answer", ""))}, None
    chosen, rejected = (_as_messages(record.get(k), "assistant") for k in ("chosen", "rejected"))
    if chosen is None or rejected is None:
        return None, "missing_field"
    texts = ["".join(m.get("content") or "" for m in side if isinstance(m, dict)) for side in (chosen, rejected)]
    if not all(t.strip() for t in texts):
        return None, "empty_completion"
    if texts[0] == texts[1]:
        return None, "identical_pair"
    return {"prompt": prompt, "chosen": texts[0], "rejected": texts[1]}, None


def from_generated(row: dict, kind: str) -> dict:
    """A generated problem as an example; replies are written as ``generated.reply`` writes them."""
    user = [{"role": "user", "content": row["question"]}]
    answer, wrong = generated.reply(row["answer"]), generated.reply(row["wrong"])
    if kind == "conversation":
        return {"messages": user + [{"role": "assistant", "content": answer}], "task": row["task"]}
    if kind == "pair":
        return {"prompt": user, "chosen": answer, "rejected": wrong, "task": row["task"]}
    return {"prompt": user, "answer": row["answer"], "task": row["task"]}


def builtin(cfg, kind: str, passages: list[str] | None) -> Examples:
    """The generated tasks: train_examples split evenly over cfg.tasks, held-out problems per task."""
    per_task = max(cfg.train_examples // len(cfg.tasks), 1)
    train, validation, heldout = [], [], {}
    for task in cfg.tasks:
        source = passages if task == "passage_qa" else None
        train += [from_generated(r, kind) for r in generated.examples(task, "train", per_task, cfg.seed, source)]
        test = generated.examples(task, "test", max(cfg.heldout_examples, 8), cfg.seed, source)
        heldout[task] = [from_generated(r, kind) for r in test][:cfg.heldout_examples]
        validation += [from_generated(r, kind) for r in test[:8]]
    return Examples(train, validation, heldout, records_in=len(train) + len(validation))


def read_records(spec: str) -> list[dict]:
    """Records of a local .jsonl[.gz] / .json / .parquet file, or ``hf:NAME[:SPLIT]``."""
    if spec.startswith("hf:"):
        name, _, split = spec[3:].partition(":")
        try:
            from datasets import load_dataset

            return [dict(r) for r in load_dataset(name, split=split or "train")]
        except Exception as err:  # offline, unknown name, no such split: the library's own types
            raise StageError(f"finetune.data={spec}: cannot load the Hugging Face dataset "
                             f"({type(err).__name__}: {str(err)[:300]}); use a local .jsonl/.parquet file "
                             f"or data=builtin where the Hub is not reachable") from None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise StageError(f"finetune.data={spec}: no such file (builtin, a .jsonl/.parquet file, or hf:NAME[:SPLIT])")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    from pipeline.core.tasks import read_json_records

    return read_json_records(path)


def from_file(cfg, kind: str) -> Examples:
    records = read_records(cfg.data)
    if cfg.train_examples:
        records = records[:cfg.train_examples]
    out = Examples([], [], records_in=len(records))
    for n, record in enumerate(records):
        example, why = normalize(record, kind)
        if why:
            out.dropped[why] += 1
            continue
        key = hashlib.sha256(f"{n}".encode()).digest()
        (out.validation if int.from_bytes(key[:4], "big") / 2**32 < VALIDATION_FRACTION else out.train).append(example)
    if not out.train:
        raise StageError(f"finetune.data={cfg.data}: no usable {kind} records among {len(records)} "
                         f"(set aside: {dict(out.dropped)}); see pipeline/finetune/data.py for the formats")
    if not out.validation and len(out.train) > 1:  # small files: one example still validates
        out.validation.append(out.train.pop())
    return out


def load(cfg, passages: list[str] | None = None) -> Examples:
    kind = KIND[cfg.method]
    return builtin(cfg, kind, passages) if cfg.data == "builtin" else from_file(cfg, kind)


def corpus_passages(tokens_dir: Path, n_docs: int = 1000, n_words: int = 12) -> list[str]:
    """Passages of the curated corpus (the tokenize stage's training documents) for passage_qa:
    runs of ``n_words`` words of plain letters, one per document."""
    import re

    from tokenizers import Tokenizer

    from pipeline.core.tokens import TokenData

    data = TokenData(tokens_dir)
    tok = Tokenizer.from_file(str(Path(tokens_dir) / "tokenizer.json"))
    out = []
    for i, ids in enumerate(data.documents("train")):
        if i >= n_docs:
            break
        words = [w for w in re.findall(r"[A-Za-z]+", tok.decode(ids[:400].tolist(), skip_special_tokens=True))
                 if len(w) > 1]
        if len(words) >= n_words:
            out.append(" ".join(words[:n_words]))
    return out
