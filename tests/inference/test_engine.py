"""The engine against references: the model's own cache-free generate, Hugging Face generate on
the exported model, and itself under other batch compositions, pool sizes and prefix sharing."""
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer

from pipeline.core.inference import Engine, EngineConfig, SamplingParams
from tests.inference.conftest import random_model

PROMPTS = ["the quick", "Once upon a time there was a café in Zürich, 1984 — “quoted” 東京. Once upon",
           "def main():\n", "pack my box with five dozen liquor jugs! pack my box with five dozen liquor jugs!"]
GREEDY = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def reference_tokens(model, tok, prompt, n):
    ids = torch.tensor([tok.encode(prompt).ids])
    return model.generate(ids, n, temperature=0)[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("variant", [{}, {"qk_norm": True}, {"tie_embeddings": False}, {"pos_emb": "sinusoidal"},
                                     {"n_kv_head": 1}, {"n_kv_head": 4}, {"attention": "prefix"}],
                         ids=["llama", "qk-norm", "untied", "sinusoidal", "mqa", "mha", "prefix-lm"])
def test_greedy_batch_equals_the_models_cache_free_generate(tok, variant):
    model = random_model(**variant)
    engine = Engine(model, tok, EngineConfig(block_size=16))
    outs = engine.generate(PROMPTS, GREEDY)
    for prompt, out in zip(PROMPTS, outs):
        assert out.token_ids == reference_tokens(model, tok, prompt, 24), prompt
        assert out.finish_reason == "length" and out.prompt_tokens == len(tok.encode(prompt).ids)
    assert engine.cache.allocator.num_free == engine.cache.num_blocks  # every block came back


def test_greedy_equals_hugging_face_generate_on_the_export(model_dir, tok):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(model_dir / "hf", dtype=torch.float32).eval()
    engine = Engine.from_dir(model_dir)
    outs = engine.generate(PROMPTS, GREEDY)
    for prompt, out in zip(PROMPTS, outs):
        ids = torch.tensor([tok.encode(prompt).ids])
        with torch.no_grad():
            theirs = hf.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=2, eos_token_id=None)
        assert out.token_ids == theirs[0, ids.shape[1]:].tolist(), prompt


def test_requests_joining_mid_flight_get_the_tokens_they_get_alone(tok):
    model = random_model()
    alone = [Engine(model, tok).generate([p], GREEDY)[0].token_ids for p in PROMPTS]
    engine = Engine(model, tok, EngineConfig(max_batch=3))
    ids = {engine.add_request(PROMPTS[0], GREEDY): 0}
    batch_sizes, outputs = [], {}
    for step in range(200):
        if step in (3, 7, 8):  # requests arrive while others decode; max_batch=3 makes the last wait
            ids[engine.add_request(PROMPTS[len(ids)], GREEDY)] = len(ids)
        if not engine.has_work():
            break
        batch_sizes.append(len(engine.running))
        for d in engine.step():
            outputs.setdefault(d.request_id, []).extend(d.token_ids)
    assert [outputs[r] for r in ids] == alone
    assert max(batch_sizes) == 3 and 1 in batch_sizes  # the batch grew and shrank between steps


def test_a_small_pool_preempts_and_recomputes_without_changing_outputs(tok):
    model = random_model()
    sampled = [SamplingParams(max_tokens=40, temperature=0.9, top_k=50, seed=i, ignore_eos=True) for i in range(4)]
    roomy = Engine(model, tok).generate(PROMPTS, sampled)
    tight = Engine(model, tok, EngineConfig(block_size=16, kv_cache_tokens=16 * 9))
    outs = tight.generate(PROMPTS, sampled)
    assert [o.token_ids for o in outs] == [o.token_ids for o in roomy]
    assert tight.stats["preempted"] > 0
    assert tight.cache.allocator.num_free == tight.cache.num_blocks


def test_a_sequence_longer_than_the_whole_pool_ends_with_length(tok):
    model = random_model()
    engine = Engine(model, tok, EngineConfig(block_size=16, kv_cache_tokens=32))
    out = engine.generate(["the quick"], SamplingParams(max_tokens=80, temperature=0, ignore_eos=True))[0]
    # 32 tokens fill the pool; the 33rd is sampled from them (it never needs a slot)
    assert out.finish_reason == "length" and out.prompt_tokens + len(out.token_ids) == 33
    assert out.token_ids == reference_tokens(model, tok, "the quick", len(out.token_ids))
    assert engine.cache.allocator.num_free == engine.cache.num_blocks


def test_a_shared_system_prompt_is_computed_once_and_changes_nothing(tok):
    model = random_model()
    system = ("the quick brown fox jumps over the lazy dog. " * 4).strip()
    prompts = [system + q for q in (" pack my box", " Once upon", " def main")]
    plain = Engine(model, tok, EngineConfig(prefix_sharing=False)).generate(prompts, GREEDY)
    engine = Engine(model, tok, EngineConfig(block_size=16))
    # one after the other: a finished request's blocks are free again but stay findable
    outs = [engine.generate([p], GREEDY)[0] for p in prompts]
    assert [o.token_ids for o in outs] == [o.token_ids for o in plain]
    shared_blocks = len(tok.encode(system).ids) // 16
    assert shared_blocks >= 2 and engine.stats["prefix_tokens_shared"] == 2 * shared_blocks * 16


def test_concurrent_sequences_share_prefix_blocks_by_reference(tok):
    engine = Engine(random_model(), tok, EngineConfig(block_size=16))
    system = ("the quick brown fox jumps over the lazy dog. " * 4).strip()
    engine.generate([system + " x"], SamplingParams(max_tokens=1))
    a, b = (engine.add_request(system + q, GREEDY) for q in (" pack", " once"))
    engine.step()
    tables = [s.table.blocks for s in engine.running]
    n = len(tok.encode(system).ids) // 16
    assert tables[0][:n] == tables[1][:n] and all(engine.cache.allocator.refs[blk] == 2 for blk in tables[0][:n])
    assert set(tables[0][n:]).isdisjoint(tables[1][n:])  # the partly filled tails are private


def test_stop_strings_eos_and_max_tokens(tok, model_dir):
    engine = Engine.from_dir(model_dir)
    free = engine.generate(["the quick"], SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))[0]
    stop = free.text[5:8]
    cut = engine.generate(["the quick"], SamplingParams(max_tokens=30, temperature=0, stop=[stop], ignore_eos=True))[0]
    assert cut.finish_reason == "stop" and cut.text == free.text[:free.text.find(stop)]
    eos_at = free.token_ids[3]  # make the 4th greedy token the "EOS": generation ends there
    ended = engine.generate(["the quick"], SamplingParams(max_tokens=30, temperature=0, stop_token_ids=[eos_at],
                                                         ignore_eos=True))[0]
    assert ended.finish_reason == "stop" and ended.token_ids == free.token_ids[:free.token_ids.index(eos_at) + 1]
    short = engine.generate(["the quick"], SamplingParams(max_tokens=5, temperature=0))[0]
    assert len(short.token_ids) <= 5


def test_the_context_ends_generation_with_length(tok):
    model = random_model()
    engine = Engine(model, tok)
    out = engine.generate(["the quick"], SamplingParams(max_tokens=10_000, temperature=0, ignore_eos=True))[0]
    assert out.finish_reason == "length" and out.prompt_tokens + len(out.token_ids) == model.cfg.max_seq_len


def test_streamed_text_adds_up_to_the_completion(tok, model_dir):
    engine = Engine.from_dir(model_dir)
    params = SamplingParams(max_tokens=30, temperature=0.8, seed=3, stop=["zz"], ignore_eos=True)
    whole = engine.generate([PROMPTS[1]], params)[0]
    deltas = list(engine.stream(PROMPTS[1], params))
    assert "".join(d.text for d in deltas) == whole.text
    assert [t for d in deltas for t in d.token_ids] == whole.token_ids
    assert deltas[-1].finished and not any(d.finished for d in deltas[:-1])
    assert all("\ufffd" not in d.text or whole.text.count("\ufffd") for d in deltas)


class CountingDecodes:
    """A tokenizer that counts its decode calls (the Rust object's methods cannot be patched)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decodes = tokenizer, 0

    def decode(self, *args, **kwargs):
        self.decodes += 1
        return self.tokenizer.decode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def test_generate_decodes_its_text_once_and_it_equals_the_streamed_text(tok, model_dir):
    engine = Engine.from_dir(model_dir)
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    engine.tokenizer = counting = CountingDecodes(engine.tokenizer)
    whole = engine.generate([PROMPTS[0]], params)[0]
    assert counting.decodes == 1  # not once per step: nobody reads generate()'s text before the end
    streamed = "".join(d.text for d in engine.stream(PROMPTS[0], params))
    assert whole.text and whole.text == streamed == tok.decode(whole.token_ids, skip_special_tokens=True)


def test_a_seed_fixes_the_sample_whatever_else_is_in_the_batch(tok):
    engine = Engine(random_model(), tok)
    params = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=11, ignore_eos=True)
    alone = engine.generate([PROMPTS[0]], params)[0].token_ids
    crowd = engine.generate([PROMPTS[2], PROMPTS[0], PROMPTS[1]],
                            [SamplingParams(max_tokens=7, seed=1), params, SamplingParams(max_tokens=30, seed=2)])
    assert crowd[1].token_ids == alone
    other = engine.generate([PROMPTS[0]], SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=12,
                                                         ignore_eos=True))[0]
    assert other.token_ids != alone


def test_bad_prompts_are_refused_with_the_reason(tok):
    engine = Engine(random_model(), tok)
    with pytest.raises(ValueError, match="empty"):
        engine.add_request("", GREEDY)
    with pytest.raises(ValueError, match="context is 96 tokens"):
        engine.add_request(list(range(3, 99)), GREEDY)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)


TRITON_RUN = """
import torch
from tests.inference.conftest import random_model, train_bpe, TEXTS, SPECIALS
from pipeline.core.inference import Engine, EngineConfig, SamplingParams
tok = train_bpe(TEXTS, 360, SPECIALS, "gpt4", bos_token="<|bos|>")
prompts = ["the quick", "Once upon a time there was a café"]
p = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
model = random_model()
outs = {}
for backend in ("torch", "triton"):
    model.cfg.kernels = backend
    outs[backend] = [o.token_ids for o in Engine(model, tok, EngineConfig(block_size=16)).generate(prompts, p)]
assert outs["torch"] == outs["triton"], outs
print("same", outs["triton"])
"""


def test_the_triton_kernels_generate_the_same_tokens_under_the_interpreter(repo):
    env = {"TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-c", TRITON_RUN], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and "same" in run.stdout, run.stderr[-3000:]
