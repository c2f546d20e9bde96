"""Hugging Face export: transformers loads it and matches our logits; import brings it back."""
import json

import pytest
import torch

from pipeline.model import Config, Transformer
from pipeline.model.hf import config_from_hf, export_hf, import_hf
from pipeline.tokenize.bpe import train_bpe

torch.set_num_threads(1)
SPECIALS = ["<|bos|>", "<|endoftext|>", "<|pad|>", "<|user|>", "<|sentinel_0|>"]


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    texts = ["the quick brown fox jumps over the lazy dog " * 20, "pack my box with five dozen liquor jugs " * 20]
    tok = train_bpe(texts, 300, SPECIALS, "gpt4", bos_token="<|bos|>")
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def model_with_random_norms(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = Config(vocab_size=320, n_layer=2, n_head=4, n_kv_head=2, d_model=64, d_mlp=128, max_seq_len=48,
                 rope_base=5000.0, **kw)
    model = Transformer(cfg).eval()
    with torch.no_grad():  # norms start at 1: perturb them so a misplaced norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("options, arch", [({}, "LlamaForCausalLM"),
                                           ({"tie_embeddings": False}, "LlamaForCausalLM"),
                                           ({"qk_norm": True}, "Qwen3ForCausalLM")])
def test_transformers_loads_the_export_and_matches_our_logits(tmp_path, tokenizer_json, options, arch):
    from transformers import AutoModelForCausalLM

    model = model_with_random_norms(**options)
    export_hf(model, tokenizer_json, tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(hf).__name__ == arch
    assert sum(p.numel() for p in hf.parameters()) == model.num_params()
    x = torch.randint(0, 320, (2, 40))
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf(x).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    # greedy decoding agrees token for token
    with torch.no_grad():
        hf_tokens = hf.generate(x[:1, :8], max_new_tokens=6, do_sample=False, pad_token_id=2)
    assert torch.equal(hf_tokens, model.generate(x[:1, :8], 6, temperature=0))


def test_import_round_trips_the_weights_and_config(tmp_path, tokenizer_json):
    model = model_with_random_norms(qk_norm=True, tie_embeddings=False)
    export_hf(model, tokenizer_json, tmp_path / "hf")
    back = import_hf(tmp_path / "hf")
    assert back.cfg == model.cfg
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randint(0, 320, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(back(x)[0], model(x)[0], atol=0, rtol=0)


def test_tied_import_keeps_the_tie(tmp_path, tokenizer_json):
    export_hf(model_with_random_norms(), tokenizer_json, tmp_path / "hf")
    back = import_hf(tmp_path / "hf")
    assert back.lm_head.weight is back.embed.weight


def test_the_exported_tokenizer_has_our_special_tokens(tmp_path, tokenizer_json):
    from transformers import AutoTokenizer

    export_hf(model_with_random_norms(), tokenizer_json, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|bos|>", "<|endoftext|>", "<|pad|>")
    ids = tok("the quick fox").input_ids
    assert ids[0] == 0 and tok.decode(ids, skip_special_tokens=True) == "the quick fox"
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 1, 2)


def test_sinusoidal_models_do_not_export(tmp_path, tokenizer_json):
    with pytest.raises(ValueError, match="sinusoidal has no Llama"):
        export_hf(model_with_random_norms(pos_emb="sinusoidal"), tokenizer_json, tmp_path / "hf")


@pytest.mark.parametrize("change, message", [
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}}, "rope scaling 'llama3'"),
    ({"attention_bias": True}, "biases"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"model_type": "mistral"}, "model_type 'mistral' is not supported"),
])
def test_checkpoints_the_model_cannot_represent_are_refused(change, message):
    base = {"model_type": "llama", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2}
    assert config_from_hf(base).d_model == 64
    with pytest.raises(ValueError, match=message):
        config_from_hf({**base, **change})


def test_special_token_names_come_from_the_tokenize_meta(tmp_path, tokenizer_json):
    from transformers import AutoTokenizer

    copy = tmp_path / "model" / "tokenizer.json"
    copy.parent.mkdir()
    copy.write_text(tokenizer_json.read_text())
    # pretrain keeps the tokenize stage's meta.json beside its tokenizer as tokenizer_meta.json
    strings = {"bos": "<|user|>", "eos": "<|sentinel_0|>", "pad": "<|pad|>"}
    (copy.parent / "tokenizer_meta.json").write_text(json.dumps({"special_token_strings": strings}))
    export_hf(model_with_random_norms(), copy, tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert (tok.bos_token, tok.eos_token) == ("<|user|>", "<|sentinel_0|>")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"]) == (3, 4)
