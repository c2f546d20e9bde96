"""Validation loss, bits per byte, the unigram baseline, and text samples."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pipeline.core.train.batches import windows


def byte_level_table() -> dict[str, int]:
    """GPT-2's byte <-> printable-character map, inverted: the character a byte-level BPE
    vocabulary uses for each byte -> that byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes(tokenizer_path: Path, vocab_size: int) -> np.ndarray:
    """UTF-8 bytes each token id stands for (0 for special tokens and unused ids), so the
    bytes under any slice of tokens are a sum — exact for byte-level BPE, where a token is
    a fixed byte string even when it splits a UTF-8 character."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    special = set(tok.get_added_tokens_decoder())
    inverse = byte_level_table()
    out = np.zeros(vocab_size, dtype=np.int64)
    for piece, i in tok.get_vocab(with_added_tokens=False).items():
        if i >= vocab_size or i in special:
            continue
        if all(ch in inverse for ch in piece):
            out[i] = len(piece)  # one character per byte
        else:  # not byte-level: count the decoded text
            out[i] = len(tok.decode([i]).encode("utf-8"))
    return out


def _next_token_batch(tokens: np.ndarray, starts, seq_len: int) -> dict:
    x, y = windows(tokens, starts, seq_len)
    return {"idx": x, "targets": y}


def _next_token_loss(model, batch):
    return model(batch["idx"], batch["targets"])[1]


@torch.no_grad()
def loss_sums(model, tokens: np.ndarray, starts: np.ndarray, seq_len: int, batch_size: int,
              autocast, device, rank: int = 0, world: int = 1, objective=None, loss_fn=None) -> tuple[float, int]:
    """(sum of the target tokens' losses in nats, number of target tokens) over windows
    ``starts``, shared out between ranks; every rank runs the same number of forwards (FSDP
    needs that). Under tensor or pipeline parallelism the windows are shared out between the
    model replicas. Targets are the next tokens, or with ``objective`` (an ObjectiveBatches,
    and its ``loss_fn``) that objective's targets on the same windows."""
    from pipeline.core.train import parallel

    rank, world = parallel.data_coords(rank, world)
    per_rank = -(-len(starts) // world)
    mine = starts[rank * per_rank:(rank + 1) * per_rank]
    weight = np.ones(per_rank)
    if len(mine) < per_rank:  # pad with a repeat of some window, counted with weight 0
        weight[len(mine):] = 0
        mine = np.concatenate([mine, np.repeat(starts[:1], per_rank - len(mine))])
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for i in range(0, per_rank, batch_size):
        if objective is None:
            batch, call = _next_token_batch(tokens, mine[i:i + batch_size], seq_len), _next_token_loss
        else:
            batch, call = objective.val_batch(tokens, mine[i:i + batch_size]), loss_fn
        y = batch["targets"]
        y[torch.from_numpy(weight[i:i + batch_size] == 0)] = -100
        n = int((y != -100).sum())
        with autocast():
            loss = call(model, {k: v.to(device) for k, v in batch.items()})
        if n:
            total += float(loss) * n
            count += n
    model.train(was_training)
    if world > 1 and dist.is_initialized():
        t = torch.tensor([total, count], dtype=torch.float64, device=device)
        dist.all_reduce(t, group=parallel.data_group())
        total, count = float(t[0]), int(t[1])
    return total, count


def scored_ids(tokens: np.ndarray, starts: np.ndarray, seq_len: int, objective=None):
    """The target token ids of windows ``starts``, a window (or, with ``objective``, a batch of
    256 windows) at a time: the next tokens, or the objective's targets."""
    if objective is None:
        for s in starts:
            yield np.asarray(tokens[s + 1:s + seq_len + 1], dtype=np.int64)
        return
    for i in range(0, len(starts), 256):
        t = objective.val_batch(tokens, starts[i:i + 256])["targets"]
        yield t[t != -100].numpy()


def target_bytes(tokens: np.ndarray, starts: np.ndarray, seq_len: int, per_token: np.ndarray, objective=None) -> int:
    """Bytes of text under the target tokens of windows ``starts`` (specials, e.g. sentinels, are 0)."""
    return int(sum(per_token[ids].sum() for ids in scored_ids(tokens, starts, seq_len, objective)))


def bits_per_byte(nats: float, n_bytes: int) -> float:
    return nats / math.log(2) / max(n_bytes, 1)


def unigram_nats(train: np.ndarray, val: np.ndarray, starts: np.ndarray, seq_len: int,
                 vocab_size: int, alpha: float = 1.0, objective=None) -> float:
    """Summed nats of a unigram model (token frequencies on train, add-alpha smoothed) on the
    same validation targets the model is scored on: the floor a model must beat. With an
    ``objective`` the frequencies are those of its targets on (up to 4096) training windows,
    so the sentinels an objective predicts have their frequency too."""
    counts = np.zeros(vocab_size, dtype=np.float64)
    if objective is not None:
        train_starts = np.arange(min((len(train) - 1) // seq_len, 4096)) * seq_len
        for ids in scored_ids(train, train_starts, seq_len, objective):
            counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
    step = 1 << 24  # count in slices: the memmap may be larger than memory
    for i in range(0, len(train) if objective is None else 0, step):
        counts += np.bincount(np.asarray(train[i:i + step], dtype=np.int64), minlength=vocab_size)[:vocab_size]
    logp = np.log(counts + alpha) - np.log(counts.sum() + alpha * vocab_size)
    return float(-sum(logp[ids].sum() for ids in scored_ids(val, starts, seq_len, objective)))


def samples(model, tokenizer_path: Path, prompts: list[str], max_new_tokens: int, temperature: float,
            top_k: int, seed: int, eos_id: int | None, device) -> list[str]:
    """Continuations of each prompt (the tokenizer adds BOS as in training), all prompts
    batched in the inference engine; prompt i is sampled with seed ``seed + i``."""
    from tokenizers import Tokenizer

    from pipeline.core.inference import Engine, EngineConfig, SamplingParams

    tok = Tokenizer.from_file(str(tokenizer_path))
    engine = Engine(model, tok, EngineConfig(max_batch=max(1, len(prompts)), device=str(device)), eos_id=eos_id)
    params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature, top_k=top_k or 0, seed=seed + i)
              for i in range(len(prompts))]
    return [prompt + out.text for prompt, out in zip(prompts, engine.generate(prompts, params))]
