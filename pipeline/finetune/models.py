"""What each method trains: the whole model, LoRA adapters (peft), virtual tokens, or a reward head.

    lora_wrap(model, cfg.lora)              peft's LoraModel over our Linear layers, by module name
    virtual_model(base, "prompt", 16, ids)  the base with 16 learned virtual tokens (a soft prompt,
                                            or a prefix of keys/values in every layer), all else frozen
    save_virtual_adapter(out, model, ...)   the same as a peft prompt/prefix-tuning adapter over the
                                            base's transformers export
    train_token_rows(model, ids)            the embedding rows (and the tied head's) of a few tokens trained
                                            as a delta, the rest frozen; merge_token_rows(model) folds it in
    save_token_rows(model, dir) / load_token_rows(base, dir)   those rows beside a LoRA adapter: the
                                            adapter applies to the base with them
    RewardModel(model)                      a scalar head on the final hidden state
    save_reward(out, rm) / load_reward(dir) a reward model directory: the backbone's model directory
                                            plus reward_head.safetensors
"""
from __future__ import annotations

from pathlib import Path

import dataclasses

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

import kernels
from pipeline.core.errors import StageError

REWARD_HEAD = "reward_head.safetensors"
TOKEN_ROWS = "token_rows.safetensors"  # beside a LoRA adapter: the token rows trained with it
ADAPTER_DIR = "adapter"
ADAPTER_BASE = "base"  # adapter/base/: the frozen model's transformers export, under a prompt/prefix adapter
VIRTUAL_PARAMS = ("prompt", "prefix_k", "prefix_v")


def lora_wrap(model: nn.Module, lcfg):
    """Freeze ``model`` and add LoRA adapters to the Linear layers named in lcfg.target_modules
    (peft finds them by name in any nn.Module: q_proj, k_proj, ... of pipeline/model/transformer.py)."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = sorted(set(lcfg.target_modules) - names)
    if missing:
        raise StageError(f"finetune.lora.target_modules: the model has no Linear layers named {missing} "
                         f"(it has {sorted(names)})")
    config = LoraConfig(r=lcfg.rank, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout,
                        target_modules=list(lcfg.target_modules), bias="none")
    return get_peft_model(model, config)


def chat_token_ids(tok) -> list[int]:
    """The special tokens the chat template writes (bos and the role and end-of-turn markers): a
    base model that never saw a chat has random embedding rows there, and, with the head tied to
    the embedding, no way to predict the end-of-turn marker, so it never stops."""
    probe = [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    from pipeline.core import chat

    ids, _ = chat.encode_chat(tok, probe)
    special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
    return sorted({i for i in ids if i in special})


class TokenRows(nn.Module):
    """A parametrization of an embedding (or output head) weight: the frozen weight plus a learned
    delta on a few rows, so only those rows train (peft's trainable_token_indices, with the
    delta shared by a tied embedding and head: both read the same rows)."""

    def __init__(self, ids: list[int], width: int):
        super().__init__()
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        self.delta = nn.Parameter(torch.zeros(len(ids), width))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.index_add(0, self.ids.to(weight.device), self.delta.to(weight.dtype))


def _inner(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # under peft: our Transformer


def train_token_rows(model: nn.Module, ids: list[int]) -> nn.Module:
    """Train the rows ``ids`` of ``model``'s token embedding and output head on top of whatever
    else trains (one delta when they are tied, one each when not); every other row stays frozen."""
    inner = _inner(model)
    tied = inner.lm_head.weight is inner.embed.weight
    width, device = inner.embed.weight.shape[1], inner.embed.weight.device
    rows = TokenRows(ids, width).to(device)
    for layer in (inner.embed, inner.lm_head):
        layer.weight.requires_grad_(False)
        parametrize.register_parametrization(layer, "weight", rows if tied else TokenRows(ids, width).to(device))
    return model


def merge_token_rows(model: nn.Module) -> nn.Module:
    """Fold the learned rows into plain weights, tied again where they were."""
    inner = _inner(model)
    layers = [m for m in (inner.embed, inner.lm_head) if parametrize.is_parametrized(m, "weight")]
    with torch.no_grad():
        merged = [m.weight.detach().clone() for m in layers]
        # Not leave_parametrized=True: it writes into the original in place, which a tied head
        # shares, so the second layer would add the delta again.
        for m in layers:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        for m, w in zip(layers, merged):
            m.weight.copy_(w)
    return model


def save_token_rows(model: nn.Module, folder: Path) -> None:
    from pipeline.model.io import save_weights

    inner = _inner(model)
    embed, head = inner.embed.parametrizations.weight[0], inner.lm_head.parametrizations.weight[0]
    state = {"ids": embed.ids.cpu(), "embed": embed.delta.detach().cpu().clone()}
    if head is not embed:
        state["lm_head"] = head.delta.detach().cpu().clone()
    save_weights(state, Path(folder) / TOKEN_ROWS)


def load_token_rows(model: nn.Module, folder: Path) -> nn.Module:
    """``model`` (the base of a LoRA adapter) with the token rows trained beside the adapter in
    ``folder``, merged: ``PeftModel.from_pretrained(load_token_rows(base, dir), dir)`` is the model trained."""
    from pipeline.model.io import load_weights

    path = Path(folder) / TOKEN_ROWS
    if not path.is_file():
        return model  # trained with finetune.trainable_tokens=none: the adapter alone
    state = load_weights(path)
    train_token_rows(model, state["ids"].tolist())
    with torch.no_grad():
        model.embed.parametrizations.weight[0].delta.copy_(state["embed"])
        if "lm_head" in state:
            model.lm_head.parametrizations.weight[0].delta.copy_(state["lm_head"])
    return merge_token_rows(model)


# What the virtual tokens of method=prompt|prefix start as: the model reading this text.
VIRTUAL_INIT_TEXT = ("You are a helpful assistant. Read the question carefully and give exactly the answer it asks "
                     "for, in as few words as possible.")


def virtual_init_ids(tok) -> list[int]:
    return tok(VIRTUAL_INIT_TEXT, add_special_tokens=False)["input_ids"]


def virtual_config(cfg, method: str, n: int):
    """The model config with ``n`` virtual tokens of the method's kind."""
    key = "prompt_tokens" if method == "prompt" else "prefix_tokens"
    if getattr(cfg, key):
        raise StageError(f"finetune method={method}: the input model already has {key}={getattr(cfg, key)}")
    return dataclasses.replace(cfg, **{key: n})


def virtual_model(base: nn.Module, method: str, n: int, init_ids: list[int]) -> nn.Module:
    """A copy of ``base`` with ``n`` virtual tokens (method prompt | prefix) that are its only
    trainable parameters. They start as the base model reading ``init_ids`` (tiled to n tokens):
    a soft prompt from those tokens' embeddings, a prefix from every layer's keys and values of
    them (Lester et al. 2021 and Li & Liang 2021 both find real-token starts train better than
    random ones), so step 0 is the base model with that text before the conversation."""
    from pipeline.model.transformer import Transformer

    model = Transformer(virtual_config(base.cfg, method, n)).to(base.embed.weight.device)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(m.rsplit(".", 1)[-1] in VIRTUAL_PARAMS for m in missing), (missing, unexpected)
    ids = torch.tensor([init_ids[i % len(init_ids)] for i in range(n)], device=base.embed.weight.device)
    with torch.no_grad():
        if method == "prompt":
            model.prompt.copy_(base.embed.weight[ids])
        else:
            for block, (k, v) in zip(model.blocks, text_keys_values(base, ids)):
                block.attn.prefix_k.copy_(k)
                block.attn.prefix_v.copy_(v)
    for name, p in model.named_parameters():
        p.requires_grad_(name.rsplit(".", 1)[-1] in VIRTUAL_PARAMS)
    return model


@torch.no_grad()
def text_keys_values(model: nn.Module, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the keys (after RoPE, as attention reads them) and values (Hkv, n, head_dim)
    of ``model`` reading the token ids at positions 0..n-1."""
    cfg, n = model.cfg, len(ids)
    x = model.embed(ids[None])
    rotary = (model.rope_cos[:n], model.rope_sin[:n]) if cfg.pos_emb == "rope" else None
    if rotary is None:
        x = x + model.pos_table[:n].to(x.dtype)
    out = []
    for block in model.blocks:
        attn, h = block.attn, block.attn_norm(x)
        k = attn.k_proj(h).view(1, n, cfg.n_kv_head, cfg.head_dim)
        v = attn.v_proj(h).view(1, n, cfg.n_kv_head, cfg.head_dim).transpose(1, 2)
        if cfg.qk_norm:
            k = attn.k_norm(k)
        k = k.transpose(1, 2)
        if rotary is not None:
            _, k = kernels.apply_rotary(k, k, *rotary)
        out.append((k[0], v[0]))
        x = block(x, rotary, None)
    return out


def save_virtual_adapter(out: Path, model: nn.Module, tokenizer_json) -> Path:
    """``out/adapter``: a peft prompt-tuning or prefix-tuning adapter carrying the model's virtual
    tokens, over ``out/adapter/base`` (the frozen weights as a transformers model), so that
    ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(adapter/base), adapter)``
    computes what our model does. (transformers itself has no place for virtual tokens.)"""
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pipeline.model.hf import export_hf
    from pipeline.model.transformer import Transformer

    cfg = model.cfg
    frozen = Transformer(dataclasses.replace(cfg, prompt_tokens=0, prefix_tokens=0))
    frozen.load_state_dict({k: v for k, v in model.state_dict().items()
                            if k.rsplit(".", 1)[-1] not in VIRTUAL_PARAMS})
    adapter = Path(out) / ADAPTER_DIR
    export_hf(frozen, tokenizer_json, adapter / ADAPTER_BASE)
    hf = AutoModelForCausalLM.from_pretrained(adapter / ADAPTER_BASE, dtype=torch.float32)
    if cfg.prompt_tokens and cfg.prefix_tokens:
        raise StageError("a peft adapter holds either a soft prompt or a prefix, not both")
    if cfg.prompt_tokens:
        peft_cfg, weight = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.prompt_tokens), model.prompt
    else:  # peft's layout: per virtual token, layer by layer, keys then values, (kv heads, head_dim) each
        peft_cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=cfg.prefix_tokens)
        kv = torch.stack([torch.stack((b.attn.prefix_k, b.attn.prefix_v)) for b in model.blocks])  # (L, 2, H, n, hd)
        weight = kv.permute(3, 0, 1, 2, 4).reshape(cfg.prefix_tokens, -1)
    peft_model = get_peft_model(hf, peft_cfg)
    with torch.no_grad():
        peft_model.prompt_encoder["default"].embedding.weight.copy_(weight.detach().float().cpu())
    peft_model.save_pretrained(str(adapter))
    return adapter


class RewardModel(nn.Module):
    """r(prompt, reply): a linear head on the hidden state at the reply's last content token (the
    position that has read the whole reply), as transformers' *ForSequenceClassification."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.score = nn.Linear(backbone.cfg.d_model, 1, bias=False)
        nn.init.normal_(self.score.weight, std=backbone.cfg.init_std)

    def forward(self, idx: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        h = self.backbone.hidden_states(idx)
        return self.score(h[torch.arange(idx.shape[0], device=idx.device), last]).squeeze(-1).float()


def save_reward(out: Path, weights: dict, backbone, tokenizer_json, meta, log=None) -> None:
    from pipeline.model.io import save_model_dir, save_weights

    backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")})
    save_model_dir(out, backbone, tokenizer_json, meta, log=log)
    save_weights({"score.weight": weights["score.weight"]}, out / REWARD_HEAD)


def load_reward(path, device="cpu") -> RewardModel:
    from pipeline.model.io import load_model, load_weights

    path = Path(path)
    if not (path / REWARD_HEAD).is_file():
        raise StageError(f"{path}: not a reward model directory (no {REWARD_HEAD}; made by finetune method=reward)")
    rm = RewardModel(load_model(path))
    rm.score.load_state_dict({"weight": load_weights(path / REWARD_HEAD)["score.weight"]})
    return rm.to(device).eval()
