"""Training a few token rows (the chat markers) of a frozen model: only those rows move, the
tied head moves with them, and merging gives the model that was trained."""
import pytest
import torch

from pipeline.finetune.models import merge_token_rows, train_token_rows
from pipeline.model import Config
from pipeline.model.transformer import Transformer

ROWS = [3, 5]


def _tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(Config(**{"vocab_size": 64, "n_layer": 1, "n_head": 2, "n_kv_head": 2, "d_model": 16,
                                 "d_mlp": 32, "max_seq_len": 16, "kernels": "torch", **kw}))


@pytest.mark.parametrize("tied", [True, False])
def test_only_the_rows_train_and_the_merged_model_is_the_trained_one(tied):
    base, model = _tiny(tie_embeddings=tied), _tiny(tie_embeddings=tied)
    for p in model.parameters():
        p.requires_grad_(False)
    train_token_rows(model, ROWS)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == (1 if tied else 2) * len(ROWS) * 16
    x = torch.tensor([[1, 3, 7, 5, 2, 9]])
    opt = torch.optim.AdamW(trainable, lr=0.1)
    for _ in range(3):
        model(x, x.roll(-1, 1))[1].backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        trained = model(x)[0]
    merge_token_rows(model)
    assert (model.lm_head.weight is model.embed.weight) == tied
    with torch.no_grad():
        assert torch.allclose(model(x)[0], trained, atol=1e-6) and (trained - base(x)[0]).abs().max() > 1e-3
    for name in ("embed", "lm_head"):
        moved = (getattr(model, name).weight != getattr(base, name).weight).any(-1).nonzero().flatten().tolist()
        assert moved == ROWS, name
