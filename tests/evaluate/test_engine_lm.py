"""generate_until through the inference engine equals the one-request-at-a-time path it replaced
(a full forward per token), on a tiny native model: stop strings, stop tokens, EOS, token limits,
and a request too long for the engine (it keeps the old path)."""
import pytest
from tokenizers import Tokenizer as RawTokenizer

from pipeline.evaluate.engine_lm import EngineLM
from pipeline.evaluate.lm import CausalLM, Tokenizer, logits_fn
from pipeline.tokenize.bpe import train_bpe
from tests.inference.conftest import SPECIALS, TEXTS, random_model


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_bpe(TEXTS, 360, SPECIALS, "gpt4", bos_token="<|bos|>").save(str(path))
    raw = RawTokenizer.from_file(str(path))
    return Tokenizer(raw, raw.token_to_id("<|bos|>"), raw.token_to_id("<|endoftext|>"))


REQUESTS = [("the quick brown", {"until": ["."], "max_gen_toks": 30}),
            ("Once upon a time", {"until": ["\n", "o"], "max_gen_toks": 20}),
            ("def main():\n", {"until": [], "max_gen_toks": 12}),
            ("pack my box", {"until": "x", "max_gen_toks": 40}),
            ("the lazy dog", {"until": ["", "zz"], "max_gen_toks": 7}),
            ("jumps over", {"max_gen_toks": 95}),  # the context keeps 1 token: still fits the engine
            ("five dozen", {"max_gen_toks": 96})]  # no room at all: the old path's sliding window


@pytest.mark.parametrize("fuse", [False, True], ids=["layers", "fused"])
@pytest.mark.parametrize("variant", [{}, {"prompt_tokens": 3}, {"prefix_tokens": 2}],
                         ids=["plain", "prompt-tuned", "prefix-tuned"])
def test_engine_generation_equals_the_one_at_a_time_path(tok, monkeypatch, variant, fuse):
    model = random_model(**variant)  # max_seq_len 96
    old = CausalLM(logits_fn(model), tok, 96, batch_size=3)
    new = EngineLM(model, tok, 96, batch_size=3, fuse=fuse)  # 3 < 7 requests: they join as others leave
    expected = old.generate_until(REQUESTS)
    # A token the model emits mid-reply as a chat end-of-turn id: some reply stops at it.
    stop = old.greedy_all([("the quick brown", [], 30)])[0][3]
    old.stop_ids = new.stop_ids = {stop}
    expected_with_stop = old.generate_until(REQUESTS)
    assert expected_with_stop != expected

    fallbacks = []
    monkeypatch.setattr(new, "_greedy", lambda *a: fallbacks.append(a) or CausalLM._greedy(new, *a))
    assert new.generate_until(REQUESTS) == expected_with_stop
    assert [a[0] for a in fallbacks] == ["five dozen"]  # every other request went through the engine
    new.stop_ids = set()
    assert new.generate_until(REQUESTS) == expected
    # The same tokens too, not just the same text once cut: the engine stops where the old path stopped.
    jobs = [(c, [kw["until"]] if isinstance(kw.get("until"), str) else kw.get("until", []), kw["max_gen_toks"])
            for c, kw in REQUESTS]
    old.stop_ids = set()
    assert new.greedy_all(jobs) == old.greedy_all(jobs)
    # A stop string did cut some reply short (else the comparison would not cover them).
    assert any(len(t) < len(old.cut_at_stops(old._greedy(c, [], kw["max_gen_toks"]), []))
               for t, (c, kw) in zip(expected, REQUESTS[:4]))


def test_a_prefix_decoder_keeps_the_one_at_a_time_path(tmp_path):
    import json

    from pipeline.evaluate.models import load_native
    from pipeline.model.io import save_model_dir

    train_bpe(TEXTS, 360, SPECIALS, "gpt4", bos_token="<|bos|>").save(str(tmp_path / "tokenizer.json"))
    meta = {"special_tokens": {"bos": 0, "eos": 1, "pad": 2}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    causal = load_native(save_model_dir(tmp_path / "causal", random_model(), tmp_path / "tokenizer.json", meta))
    prefix = load_native(save_model_dir(tmp_path / "prefix", random_model(attention="prefix"),
                                        tmp_path / "tokenizer.json", meta))
    assert type(causal) is EngineLM and type(prefix) is CausalLM and prefix.prefix_context
