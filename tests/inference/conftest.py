"""A tiny tokenizer and model directories built in the test session (no downloads)."""
import json

import pytest
import torch

from pipeline.model import Config, Transformer
from pipeline.model.io import save_model_dir
from pipeline.tokenize.bpe import train_bpe

torch.set_num_threads(1)
SPECIALS = ["<|bos|>", "<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEXTS = ["the quick brown fox jumps over the lazy dog. " * 20, "pack my box with five dozen liquor jugs! " * 20,
         "Once upon a time there was a café in Zürich, 1984 — “quoted” 東京. " * 10, "def main():\n    return 42\n" * 10]


def meta_for(tok) -> dict:
    ids = {name: tok.token_to_id(t) for name, t in zip(("bos", "eos", "pad"), SPECIALS)}
    return {"special_tokens": {**ids, "chat": {t: tok.token_to_id(t) for t in SPECIALS[3:]}},
            "special_token_strings": dict(zip(("bos", "eos", "pad"), SPECIALS))}


def tiny_config(**kw) -> Config:
    base = dict(vocab_size=384, n_layer=2, n_head=4, n_kv_head=2, d_model=64, d_mlp=128, max_seq_len=96)
    return Config(**{**base, **kw})


def random_model(seed=0, **kw) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(tiny_config(**kw)).eval()
    with torch.no_grad():  # at init the residual stream is the input embedding (a tied model repeats
        for name, p in model.named_parameters():  # its input) and logits are near-uniform (ties): widen
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
            elif name.startswith("blocks."):
                p.mul_(8)
    return model


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    tok = train_bpe(TEXTS, 360, SPECIALS, "gpt4", bos_token="<|bos|>")
    d = tmp_path_factory.mktemp("tokenizer")
    tok.save(str(d / "tokenizer.json"))
    (d / "meta.json").write_text(json.dumps(meta_for(tok)))
    return d


def write_model_dir(path, tokenizer_dir, model=None, hf=False, chat_tokens=True, **kw):
    """``chat_tokens=False``: a tokenizer meta without chat markers, so no chat template can be
    derived for the directory (pipeline.core.chat.find_template builds one from them)."""
    model = model or random_model(**kw)
    meta = json.loads((tokenizer_dir / "meta.json").read_text())
    if not chat_tokens:
        meta["special_tokens"].pop("chat")
    save_model_dir(path, model, tokenizer_dir / "tokenizer.json", meta, hf=hf)
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, tokenizer_dir):
    return write_model_dir(tmp_path_factory.mktemp("model"), tokenizer_dir, hf=True)


@pytest.fixture(scope="session")
def plain_model_dir(tmp_path_factory, tokenizer_dir):
    """A model with no chat template anywhere (no hf/ export, no chat markers to build one from)."""
    return write_model_dir(tmp_path_factory.mktemp("plain"), tokenizer_dir, hf=False, chat_tokens=False)
