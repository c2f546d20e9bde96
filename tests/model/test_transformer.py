"""The model: loss, masks (causal, prefix), options, sizes and FLOPs computed from the shapes."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pipeline.model import Config, Transformer, describe

torch.set_num_threads(1)
TINY = dict(vocab_size=300, n_layer=2, n_head=4, n_kv_head=2, d_model=64, d_mlp=128, max_seq_len=32)


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(Config(**{**TINY, **kw})).eval()


@pytest.mark.parametrize("options", [{}, {"pos_emb": "sinusoidal"}, {"qk_norm": True, "tie_embeddings": False},
                                     {"n_kv_head": 1}, {"n_kv_head": 4}])
def test_fused_loss_equals_cross_entropy_of_the_logits(options):
    model = tiny(**options)
    x = torch.randint(0, 300, (2, 20))
    y = torch.randint(0, 300, (2, 20))
    y[0, :5] = -100
    logits, none = model(x)
    assert none is None and logits.shape == (2, 20, 300)
    no_logits, loss = model(x, y)
    assert no_logits is None
    expected = F.cross_entropy(logits.reshape(-1, 300), y.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_loss_gradients_reach_every_parameter():
    model = tiny(qk_norm=True).train()
    x = torch.randint(0, 300, (2, 16))
    _, loss = model(x, x)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def _outputs_change(model, x, position, prefix_len=None):
    """Which positions' logits change when the token at ``position`` changes."""
    a, _ = model(x, prefix_len=prefix_len)
    x2 = x.clone()
    x2[0, position] = (x2[0, position] + 1) % 300
    b, _ = model(x2, prefix_len=prefix_len)
    return ((a - b).abs().amax(-1)[0] > 1e-6).nonzero().flatten().tolist()


@pytest.mark.parametrize("pos_emb", ["rope", "sinusoidal"])
def test_causal_attention_never_sees_the_future(pos_emb):
    model = tiny(pos_emb=pos_emb)
    x = torch.randint(0, 300, (1, 12))
    assert _outputs_change(model, x, 6) == list(range(6, 12))


def test_prefix_attention_is_bidirectional_inside_the_prefix_only():
    model = tiny(attention="prefix")
    x = torch.randint(0, 300, (1, 12))
    # a token inside the prefix [0, 5) is seen by every position, earlier ones included
    assert _outputs_change(model, x, 3, prefix_len=5) == list(range(12))
    # a token after the prefix is still causal
    assert _outputs_change(model, x, 8, prefix_len=5) == list(range(8, 12))
    # without prefix_len the prefix model is an ordinary causal model
    assert _outputs_change(model, x, 3) == list(range(3, 12))


def test_prefix_len_on_a_causal_model_is_refused():
    with pytest.raises(ValueError, match="attention=causal"):
        tiny()(torch.zeros(1, 4, dtype=torch.long), prefix_len=2)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"n_head \(4\) must be a multiple of n_kv_head \(3\)"):
        Config(**{**TINY, "n_kv_head": 3}).validate()
    with pytest.raises(ValueError, match="pos_emb must be one of rope|sinusoidal"):
        Transformer(Config(**{**TINY, "pos_emb": "alibi"}))
    with pytest.raises(ValueError, match="exceeds max_seq_len 32"):
        tiny()(torch.zeros(1, 33, dtype=torch.long))


def test_tied_embeddings_share_one_tensor():
    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert tied.lm_head.weight is tied.embed.weight
    assert untied.num_params() - tied.num_params() == 300 * 64


def expected_params(c: Config) -> int:
    hd = c.d_model // c.n_head
    attn = c.d_model * hd * (2 * c.n_head + 2 * c.n_kv_head) + (2 * hd if c.qk_norm else 0)
    layer = attn + 3 * c.d_model * c.d_mlp + 2 * c.d_model
    head = 0 if c.tie_embeddings else c.vocab_size * c.d_model
    return c.vocab_size * c.d_model + c.n_layer * layer + c.d_model + head


@pytest.mark.parametrize("options", [{}, {"qk_norm": True}, {"tie_embeddings": False}, {"n_kv_head": 1}])
def test_param_count_matches_the_formula(options):
    cfg = Config(**{**TINY, **options})
    assert Transformer(cfg).num_params() == expected_params(cfg)
    assert describe(cfg)["params"] == expected_params(cfg)


def test_llama_1b_shape_has_llama_3_2_1b_published_size():
    # Llama 3.2 1B: 1,235,814,400 parameters (16 x 2048, 32/8 heads, 8192 MLP, 128256 vocab, tied).
    cfg = Config(vocab_size=128256, n_layer=16, n_head=32, n_kv_head=8, d_model=2048, d_mlp=8192,
                 max_seq_len=2048, rope_base=500000.0)
    assert describe(cfg)["params"] == 1_235_814_400


def test_flops_per_token_is_6n_plus_attention():
    cfg = Config(**TINY)
    model = Transformer(cfg)
    matmul = model.num_params(non_embedding=True) - (2 * cfg.n_layer + 1) * cfg.d_model + cfg.vocab_size * cfg.d_model
    assert model.flops_per_token() == 6 * matmul + 12 * cfg.n_layer * cfg.d_model * cfg.max_seq_len
    assert model.flops_per_token(seq_len=8) < model.flops_per_token()


def test_greedy_generation_is_deterministic_and_extends_the_prompt():
    model = tiny()
    prompt = torch.randint(0, 300, (2, 5))
    a = model.generate(prompt, 10, temperature=0)
    b = model.generate(prompt, 10, temperature=0)
    assert a.shape == (2, 15) and torch.equal(a, b) and torch.equal(a[:, :5], prompt)
    # the greedy token is the argmax of the logits
    logits, _ = model(a[:, :5])
    assert torch.equal(a[:, 5], logits[:, -1].argmax(-1))
    g = torch.Generator().manual_seed(1)
    s = model.generate(prompt, 40, temperature=1.0, top_k=5, generator=g)
    assert s.shape == (2, 45)  # longer than max_seq_len: the context is cropped


def test_top_k_one_is_greedy():
    model = tiny()
    prompt = torch.randint(0, 300, (1, 4))
    assert torch.equal(model.generate(prompt, 6, temperature=1.0, top_k=1), model.generate(prompt, 6, temperature=0))


def test_config_is_a_plain_dataclass_of_typed_fields():
    names = {f.name for f in dataclasses.fields(Config)}
    assert {"vocab_size", "n_layer", "n_head", "n_kv_head", "d_model", "d_mlp", "max_seq_len", "rope_base",
            "pos_emb", "qk_norm", "tie_embeddings", "attention", "kernels", "norm_eps", "init_std"} <= names
