"""Weight sharing after training: tie the embeddings, or share blocks across layers.

    tie_embeddings  one matrix for the token embedding and the output head (GPT-2, Llama 3.2
                    1B); an untied model is tied by averaging the two (``tie: average``) or by
                    keeping one of them (``tie: embed | lm_head``)
    share_layers    ALBERT-style cross-layer sharing: consecutive groups of ``share_group``
                    blocks use one set of weights. ALBERT trains the shared weights; after
                    training we pick them: the element-wise mean of the group's blocks
                    (``share_choose: mean``) or the group's first block (``first``). The
                    saved file holds each group's weights once; the model config is unchanged,
                    compression.json's ``shared_blocks`` re-ties them on load.
"""
from __future__ import annotations

import torch

from pipeline.compress.calibrate import weight_error
from pipeline.core.errors import StageError
from pipeline.model.quantized import tie_blocks


@torch.no_grad()
def tie_embeddings(model, ctx) -> None:
    if model.cfg.tie_embeddings:
        raise StageError("compress.methods: tie_embeddings on a model whose embeddings are already tied "
                         "(model_config.json tie_embeddings=true); drop the method")
    embed, head = model.embed.weight, model.lm_head.weight
    chosen = {"average": (embed + head) / 2, "embed": embed.clone(), "lm_head": head.clone()}[ctx.cfg.tie]
    ctx.errors["embed"] = {"weight_error": round(weight_error(embed, chosen), 6)}
    ctx.errors["lm_head"] = {"weight_error": round(weight_error(head, chosen), 6)}
    embed.copy_(chosen)
    model.lm_head.weight = model.embed.weight
    model.cfg.tie_embeddings = True


def share_groups(n_layer: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n_layer))) for i in range(0, n_layer, size)]


@torch.no_grad()
def share_layers(model, ctx) -> None:
    groups = share_groups(model.cfg.n_layer, ctx.cfg.share_group)
    for group in groups:
        states = [{k: v.clone() for k, v in model.blocks[i].state_dict().items()} for i in group]
        first = model.blocks[group[0]]
        for name, tensor in first.state_dict().items():
            if ctx.cfg.share_choose == "mean":
                tensor.copy_(torch.stack([s[name] for s in states]).mean(0))
        for i, s in zip(group, states):
            ctx.errors[f"blocks.{i}"] = {"weight_error": round(
                float(sum((s[k] - v).float().norm() ** 2 for k, v in first.state_dict().items()) ** 0.5
                      / sum(t.float().norm() ** 2 for t in s.values()) ** 0.5), 6)}
    tie_blocks(model, [g for g in groups if len(g) > 1])
    ctx.layout["shared_blocks"] = [g for g in groups if len(g) > 1]
