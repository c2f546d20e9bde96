"""An encoder-decoder trained on span corruption through the pretrain stage: its T5 export equals
it, and evaluate scores it as lm-eval scores seq2seq models (context in the encoder,
continuation by the decoder); a prefix decoder is scored with its context as the prefix."""
import json

import pytest
import torch
import torch.nn.functional as F

from pipeline.evaluate.models import load_lm
from pipeline.model.io import load_model
from pipeline.stage import execute
from tests.pretrain.helpers import run_pretrain

KNOBS = ["train.steps=12", "train.warmup_steps=2", "train.log_every=1", "train.eval_every=6", "pretrain.final_eval_windows=8",
         "pretrain.sample_tokens=6"]
BOTH = ("decoder", "encoder_decoder")
REQUESTS = [("The cat sees", " the ball."), ("A dog likes", " the moon."), ("", "The king watches an apple.")]


@pytest.fixture(scope="module")
def t5_dir(token_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("t5") / "pretrain"
    run_pretrain(token_dir, out, *KNOBS, "model.arch=encoder_decoder", "model.pos_emb=relative",
                 "train.objective=span_corruption")
    return out


@pytest.fixture(scope="module")
def prefix_dir(token_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prefix") / "pretrain"
    run_pretrain(token_dir, out, *KNOBS, "model.attention=prefix", "train.objective=prefix_lm")
    return out


def test_the_stage_publishes_a_t5_checkpoint_with_our_logits_and_greedy_tokens(t5_dir):
    from transformers import AutoModelForSeq2SeqLM

    from pipeline.core.train import metrics

    stats = json.loads((t5_dir / "stats.json").read_text())
    first = metrics.read(t5_dir / "metrics.jsonl")[0]["loss"]
    assert stats["arch"] == "encoder_decoder" and stats["val_loss"] < first - 2  # it learns
    ours = load_model(t5_dir, archs=BOTH)
    hf = AutoModelForSeq2SeqLM.from_pretrained(t5_dir / "hf", dtype=torch.float32).eval()
    enc, dec = torch.randint(0, 320, (2, 30)), torch.randint(0, 320, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=enc, decoder_input_ids=dec).logits, ours(enc, dec)[0], atol=1e-4, rtol=0)
        theirs = hf.generate(enc[:1], max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert torch.equal(theirs, ours.generate(enc[:1], 8, start_id=hf.config.decoder_start_token_id, temperature=0))
    assert all("=>" in s for s in stats["samples"])


def test_seq2seq_scores_equal_transformers_own_loss_natively_and_from_the_export(t5_dir):
    from transformers import AutoModelForSeq2SeqLM

    native, how = load_lm(t5_dir, "native", batch_size=2)
    exported, how_hf = load_lm(t5_dir, "hf", batch_size=3)
    assert (how, how_hf, type(native).__name__) == ("native", "hf", "Seq2SeqLM")
    ours, theirs = native.loglikelihood(REQUESTS), exported.loglikelihood(REQUESTS)
    hf = AutoModelForSeq2SeqLM.from_pretrained(t5_dir / "hf", dtype=torch.float32).eval()
    for (ll, greedy), (ll_hf, greedy_hf), (ctx, cont) in zip(ours, theirs, REQUESTS):
        source, target = native._encode_pair(ctx, cont)
        with torch.no_grad():  # transformers' labels path: decoder input = target shifted behind the start
            loss = hf(input_ids=torch.tensor([source]), labels=torch.tensor([target])).loss
        assert ll == pytest.approx(-float(loss) * len(target), abs=1e-3) and ll == pytest.approx(ll_hf, abs=1e-3)
        assert greedy == greedy_hf
    rolling = native.loglikelihood_rolling(["The cat sees the ball. " * 8])
    assert rolling[0] == pytest.approx(exported.loglikelihood_rolling(["The cat sees the ball. " * 8])[0], abs=1e-2)
    assert native.generate_until([("The cat", {"until": ["."], "max_gen_toks": 5})]) == \
        exported.generate_until([("The cat", {"until": ["."], "max_gen_toks": 5})])


def test_the_evaluate_stage_scores_an_encoder_decoder(t5_dir, token_dir, tmp_path):
    rows = [{"question": f"Who {v}?", "choices": ["the cat", "a dog", "the moon"], "label": i % 3}
            for i, v in enumerate(["sees", "likes", "finds", "follows"])]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mc.yaml").write_text(
        "task: mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: mc.jsonl\n"
        "output_type: multiple_choice\ntest_split: test\n"
        'doc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n')
    stats = execute("evaluate", {"tasks": [str(tmp_path / "mc.yaml")], "heldout_docs": 2, "heldout_max_bytes": 2000,
                                 "contamination_ngram": 0, "canaries": {"count": 0}, "bootstrap_iters": 10},
                    {"model": t5_dir, "tokens": token_dir}, tmp_path / "eval")
    assert stats["model_source"] == "native" and stats["results"]["mc"]["docs"] == 4
    assert 0 < stats["results"]["heldout"]["metrics"]["bits_per_byte"] < 20


def test_a_prefix_decoder_reads_each_context_as_its_prefix(prefix_dir):
    lm, _ = load_lm(prefix_dir, "native")
    assert lm.prefix_context
    model = load_model(prefix_dir)
    for (ll, _), (ctx, cont) in zip(lm.loglikelihood(REQUESTS[:2]), REQUESTS[:2]):
        c, x = lm._encode_pair(ctx, cont)
        ids = torch.tensor([c + x[:-1]])
        with torch.no_grad():
            as_prefix = F.log_softmax(model(ids, prefix_len=len(c))[0], -1)[0, len(c) - 1:]
            causal = F.log_softmax(model(ids)[0], -1)[0, len(c) - 1:]
        target = torch.tensor(x)[:, None]
        assert ll == pytest.approx(float(as_prefix.gather(1, target).sum()), abs=1e-4)
        assert abs(ll - float(causal.gather(1, target).sum())) > 1e-3  # the prefix mask changes the score
