"""EngineConfig(compile=True): the compiled decode step gives the eager engine's tokens, keeps
its view of the cache right as requests join and leave, and falls back when compiling fails."""
import logging

import pytest
import torch
from tokenizers import Tokenizer

from pipeline.core.inference import Engine, EngineConfig, SamplingParams
from tests.inference.conftest import random_model

PROMPTS = ["the quick", "Once upon a time there was a café in Zürich", "def main():\n",
           "pack my box with five dozen liquor jugs! pack my box with five dozen liquor jugs!", "a",
           [5]]  # one token: it joins a batch in a decode step, with no prompt step of its own


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))


def params():
    # different lengths, so rows leave the batch at different steps and later ones join
    return [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in (40, 9, 30, 17, 25, 20)]


@pytest.mark.parametrize("variant", [{}, {"qk_norm": True, "n_kv_head": 1, "pos_emb": "sinusoidal"}],
                         ids=["llama", "qk-norm-mqa-sinusoidal"])
def test_compiled_decode_gives_the_eager_tokens_as_requests_join_and_leave(tok, variant):
    model = random_model(**variant)
    eager = Engine(model, tok, EngineConfig(max_batch=3)).generate(PROMPTS, params())
    engine = Engine(model, tok, EngineConfig(max_batch=3, compile=True))
    compiled = engine.generate(PROMPTS, params())
    assert [c.token_ids for c in compiled] == [e.token_ids for e in eager]
    view = engine.compiled.view.stats
    assert not engine.compiled.failed and 0 < view["gathers"] < view["steps"]  # the view carried on, and was rebuilt
    assert engine.cache.allocator.num_free == engine.cache.num_blocks


def test_a_failed_compile_warns_and_decodes_eagerly(tok, caplog):
    model = random_model()
    expected = Engine(model, tok).generate(PROMPTS, params())
    engine = Engine(model, tok, EngineConfig(compile=True))

    def broken(*args):
        raise RuntimeError("no C++ compiler here")

    engine.compiled.fn = broken
    with caplog.at_level(logging.WARNING, "lmdag.inference"):
        got = engine.generate(PROMPTS, params())
    assert [c.token_ids for c in got] == [e.token_ids for e in expected]
    assert engine.compiled.failed and "no C++ compiler here" in caplog.text


def test_compile_refuses_what_it_cannot_compile(tok):
    with pytest.raises(ValueError, match="prefix tuning"):
        Engine(random_model(prefix_tokens=2), tok, EngineConfig(compile=True))
    from pipeline.core.inference.offload import LayerOffloader

    model = random_model()
    with pytest.raises(ValueError, match="device_budget_mb"):
        Engine(model, tok, EngineConfig(compile=True), offloader=LayerOffloader(model, "cpu", 2**19))


def test_compile_true_on_the_command_line_reaches_the_engine(model_dir):
    from pipeline.core.inference.cli import GenerateArgs, parse
    from pipeline.core.inference.compiled import CompiledDecode

    assert parse([f"model={model_dir}", "prompt=hi"], GenerateArgs).engine().compiled is None
    engine = parse([f"model={model_dir}", "prompt=hi", "compile=true"], GenerateArgs).engine()
    assert isinstance(engine.compiled, CompiledDecode)


def test_serve_compiles_by_default_and_says_when_it_cannot(model_dir, caplog):
    from pipeline.core.inference.cli import ServeArgs, parse
    from pipeline.core.inference.compiled import CompiledDecode

    assert isinstance(parse([f"model={model_dir}"], ServeArgs).engine().compiled, CompiledDecode)
    assert parse([f"model={model_dir}", "compile=false"], ServeArgs).engine().compiled is None
    with caplog.at_level("WARNING", logger="lmdag.inference"):
        engine = parse([f"model={model_dir}", "device_budget_mb=0.4"], ServeArgs).engine()
    assert engine.compiled is None and "decodes eagerly" in caplog.text
