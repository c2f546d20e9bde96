"""Assistant replies from a model: greedy ones to score held-out answers and refusals, sampled
groups for RL. Prompts of the same length are generated together (the model's ``generate``
has no padding mask, so rows of one batch must line up); a reply ends at the first
end-of-turn or EOS token.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from pipeline.core import chat


def cut(ids: list[int], stop_ids) -> tuple[list[int], bool]:
    """The reply up to and including its first stop token, and whether it stopped."""
    for i, t in enumerate(ids):
        if t in stop_ids:
            return ids[:i + 1], True
    return ids, False


def stop_ids(tok, model_dir) -> list[int]:
    """The end-of-turn marker first (what a chat model emits; generation stops early on it), then EOS."""
    end = chat.end_token(model_dir)
    ids = [tok.convert_tokens_to_ids(end) if end else None, tok.eos_token_id]
    return [i for i in dict.fromkeys(ids) if i is not None]


@torch.no_grad()
def greedy(model, tok, conversations: list[list[dict]], max_new: int, stops: list[int], device,
           batch_size: int = 32) -> list[str]:
    """The greedy reply to each conversation (its last turn the user's), as text."""
    was_training = model.training
    model.eval()
    prompts = [chat.encode_prompt(tok, c) for c in conversations]
    by_len = defaultdict(list)
    for i, p in enumerate(prompts):
        by_len[len(p)].append(i)
    out: list[str] = [""] * len(prompts)
    for _, idx in sorted(by_len.items()):
        for start in range(0, len(idx), batch_size):
            rows = idx[start:start + batch_size]
            x = torch.tensor([prompts[i] for i in rows], device=device)
            full = model.generate(x, max_new, temperature=0.0, eos_id=stops[0] if stops else None)
            for r, i in enumerate(rows):
                reply, _ = cut(full[r, x.shape[1]:].tolist(), stops)
                out[i] = tok.decode([t for t in reply if t not in stops], skip_special_tokens=True)
    model.train(was_training)
    return out


def own_mistakes(pairs: list[dict], got: list[str]) -> tuple[list[dict], list[bool]]:
    """Each pair (prompt, chosen, rejected) with a model's greedy reply to it (``got``) as its
    rejected one where that reply is not the chosen one -> the pairs, and which were replaced.
    An empty reply (the turn ended at once) is a mistake like any other: the completion is the
    end-of-turn marker."""
    wrong = [g.strip() != p["chosen"].strip() for p, g in zip(pairs, got)]
    return [{**p, "rejected": g} if w else p for p, g, w in zip(pairs, got, wrong)], wrong


@torch.no_grad()
def sample_group(model, prompt_ids: list[int], group: int, max_new: int, temperature: float, top_k: int,
                 stops: list[int], generator: torch.Generator, device) -> list[tuple[list[int], bool]]:
    """``group`` sampled replies to one prompt: (token ids incl. the stop token, stopped)."""
    was_training = model.training
    model.eval()
    x = torch.tensor([prompt_ids] * group, device=device)
    full = model.generate(x, max_new, temperature=temperature, top_k=top_k or None, generator=generator,
                          eos_id=stops[0] if stops else None)
    model.train(was_training)
    return [cut(full[r, len(prompt_ids):].tolist(), stops) for r in range(group)]
