"""GGUF export: read back with the gguf package (tensors, tokenizer, metadata), and run by
llama.cpp itself (llama-cpp-python): its tokenization and greedy tokens equal ours."""
import json

import numpy as np
import pytest
import torch

from pipeline.core.errors import StageError
from pipeline.core.inference import Engine, SamplingParams
from pipeline.model.gguf import export_gguf, permute_for_llama_rope
from pipeline.model.io import load_model
from pipeline.tokenize.bpe import train_bpe
from tests.inference.conftest import SPECIALS, TEXTS, meta_for, random_model
from pipeline.model.io import save_model_dir

PROMPTS = ["the quick brown", "Once upon a time there was a café in Zürich, 1984", "def main():\n    return"]
TEXT_SAMPLES = PROMPTS + ["  two  spaces, 12345 digits, ünïcödé, 東京 and “quotes”!\n\nnew   lines\t\ttabs"]


def model_dir_with(tmp_path, pre="gpt4", **kw):
    tok = train_bpe(TEXTS, 360, SPECIALS, pre, bos_token="<|bos|>")
    tok.save(str(tmp_path / "tokenizer.json"))
    d = tmp_path / "model"
    save_model_dir(d, random_model(**kw), tmp_path / "tokenizer.json", meta_for(tok), hf=False)
    return d


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = model_dir_with(tmp_path_factory.mktemp("gguf"))
    return d, export_gguf(d, d / "model.gguf")


def test_tensors_read_back_equal_ours(exported):
    from gguf import GGUFReader

    d, path = exported
    model = load_model(d).requires_grad_(False)
    reader = GGUFReader(str(path))
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reuses the embedding
    assert len(tensors) == 2 + model.cfg.n_layer * 9
    np.testing.assert_array_equal(tensors["token_embd.weight"], model.embed.weight.numpy())
    attn = model.blocks[1].attn
    np.testing.assert_array_equal(tensors["blk.1.attn_v.weight"], attn.v_proj.weight.numpy())
    np.testing.assert_array_equal(tensors["blk.1.attn_q.weight"], permute_for_llama_rope(attn.q_proj.weight, 4).numpy())
    np.testing.assert_array_equal(tensors["blk.0.ffn_down.weight"], model.blocks[0].mlp.down_proj.weight.numpy())
    np.testing.assert_array_equal(tensors["output_norm.weight"], model.norm.weight.numpy())


def test_metadata_and_tokenizer_read_back(exported):
    from gguf import GGUFReader, TokenType

    d, path = exported
    reader = GGUFReader(str(path))
    field = lambda k: reader.fields[k].contents()
    assert field("general.architecture") == "llama"
    assert (field("llama.context_length"), field("llama.embedding_length"), field("llama.block_count")) == (96, 64, 2)
    assert (field("llama.attention.head_count"), field("llama.attention.head_count_kv")) == (4, 2)
    assert field("llama.rope.freq_base") == 10000.0 and field("llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "llama-bpe"
    tok = json.loads((d / "tokenizer.json").read_text())
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == 384 and tokens[:len(SPECIALS)] == SPECIALS and tokens[383] == "[PAD383]"
    assert all(tokens[i] == t for t, i in tok["model"]["vocab"].items())
    assert field("tokenizer.ggml.merges") == [" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]]
    types = field("tokenizer.ggml.token_type")
    assert types[0] == TokenType.CONTROL and types[300] == TokenType.NORMAL and types[383] == TokenType.UNUSED
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (0, 1)
    assert field("tokenizer.ggml.add_bos_token") is True


def test_f16_and_q8_0_shrink_the_file(exported, tmp_path):
    d, f32 = exported
    sizes = [export_gguf(d, tmp_path / f"{t}.gguf", dtype=t).stat().st_size for t in ("f16", "q8_0")]
    assert f32.stat().st_size > sizes[0] > sizes[1]


def test_unexportable_models_are_refused(tmp_path):
    d = model_dir_with(tmp_path, pos_emb="sinusoidal")
    with pytest.raises(StageError, match="sinusoidal"):
        export_gguf(d, tmp_path / "x.gguf")
    with pytest.raises(StageError, match="dtype"):
        export_gguf(d, tmp_path / "x.gguf", dtype="q3")
    assert not list(tmp_path.glob("*.gguf*"))


llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python (dev extra) is not installed")


def llama(path):
    return llama_cpp.Llama(model_path=str(path), n_ctx=96, n_batch=96, n_threads=1, verbose=False, seed=0)


def greedy_llama(llm, ids, n):
    llm.reset()
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
        out.append(token)
        if len(out) == n:
            return out
    return out


@pytest.mark.parametrize("variant", [{"pre": "gpt4"}, {"pre": "gpt2"}, {"pre": "gpt4", "tie_embeddings": False},
                                     {"pre": "gpt4", "qk_norm": True}], ids=["llama", "gpt2-split", "untied", "qwen3"])
def test_llama_cpp_tokenizes_and_generates_as_we_do(tmp_path, variant):
    d = model_dir_with(tmp_path, **variant)
    llm = llama(export_gguf(d, tmp_path / "m.gguf"))
    engine = Engine.from_dir(d)
    for text in TEXT_SAMPLES:
        assert llm.tokenize(text.encode("utf-8"), add_bos=True, special=False) == engine.encode(text), text
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    for prompt, ours in zip(PROMPTS, engine.generate(PROMPTS, greedy)):
        assert greedy_llama(llm, engine.encode(prompt), 12) == ours.token_ids, prompt


def test_llama_cpp_logits_match_ours(exported):
    d, path = exported
    model = load_model(d)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=96, n_threads=1, verbose=False, logits_all=True)
    ids = Engine.from_dir(d).encode(PROMPTS[1])
    llm.reset()
    llm.eval(ids)
    theirs = torch.tensor(np.array(llm.scores[:len(ids)]))
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0]
    torch.testing.assert_close(theirs, ours, atol=2e-3, rtol=1e-3)
