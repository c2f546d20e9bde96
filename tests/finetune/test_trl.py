"""Our SFT and DPO losses on the first batch equal TRL's on the same exported model and data.

TRL is a bench dependency (`pip install 'lmdag[bench]'`); without it these tests are skipped.
"""
import pytest
import torch

from pipeline.core import chat
from pipeline.core.tasks import generated
from pipeline.finetune import batches as B
from pipeline.finetune import losses
from pipeline.finetune.data import from_generated
from pipeline.model.io import load_model

trl = pytest.importorskip("trl", reason="TRL is in the bench extra (pip install 'lmdag[bench]')")
datasets = pytest.importorskip("datasets", reason="TRL's trainers read a datasets.Dataset")

N = 6  # one batch of N examples: the first batch holds all of them, in whatever order TRL draws


def _rows(kind):
    return [from_generated(r, kind) for t in ("arithmetic", "word_order", "reverse")
            for r in generated.examples(t, "train", N // 3, seed=3)]


@pytest.fixture(scope="module")
def hf(base_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(base_dir / "hf", dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(base_dir / "hf"))


def _args(cls, tmp_path, **kw):
    return cls(output_dir=str(tmp_path), per_device_train_batch_size=N, report_to=[], use_cpu=True,
               max_length=96, seed=0, bf16=False, **kw)  # TRL defaults to bf16 autocast; ours runs fp32 on CPU


def test_sft_loss_equals_trl_sft_trainer_with_assistant_only_loss(base_dir, hf, tmp_path):
    model, tok = hf
    rows = _rows("conversation")
    trainer = trl.SFTTrainer(model=model, processing_class=tok,
                             args=_args(trl.SFTConfig, tmp_path, assistant_only_loss=True, packing=False),
                             train_dataset=datasets.Dataset.from_list([{"messages": r["messages"]} for r in rows]))
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        theirs = float(trainer.compute_loss(trainer.model, batch))

    ours_tok = chat.hf_tokenizer(base_dir)
    encoded = [B.encode_conversation(ours_tok, r["messages"]) for r in rows]
    x, y = B.collate(encoded, ours_tok.pad_token_id)
    with torch.no_grad():
        ours = float(losses.sft_loss(load_model(base_dir), (x, y)))
    assert ours == pytest.approx(theirs, abs=1e-5)


@pytest.mark.parametrize("rpo_alpha", [0.0, 0.7])
def test_dpo_loss_equals_trl_dpo_trainer(base_dir, token_dir, hf, tmp_path, rpo_alpha):
    """rpo_alpha > 0 adds the chosen replies' NLL: TRL 1.x writes RPO as loss_type
    ["sigmoid", "sft"] with loss_weights [1, rpo_alpha] (older TRL: rpo_alpha)."""
    from transformers import AutoModelForCausalLM

    from tests.finetune.conftest import tiny_model_dir

    model, tok = hf
    ref_dir = tiny_model_dir(token_dir, tmp_path / "ref", seed=1)  # another init: the loss is not log 2
    ref = AutoModelForCausalLM.from_pretrained(ref_dir / "hf", dtype=torch.float32).eval()
    rows = _rows("pair")
    data = datasets.Dataset.from_list([{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                        "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    rpo = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, rpo_alpha]} if rpo_alpha else {}
    trainer = trl.DPOTrainer(model=model, ref_model=ref, processing_class=tok,
                             args=_args(trl.DPOConfig, tmp_path, beta=0.3, **rpo), train_dataset=data)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        theirs = float(trainer.compute_loss(trainer.model, batch))

    ours_tok = chat.hf_tokenizer(base_dir)
    pairs = [(B.encode_pair(ours_tok, r["prompt"], r["chosen"]), B.encode_pair(ours_tok, r["prompt"], r["rejected"]))
             for r in rows]
    policy = load_model(base_dir)
    with torch.no_grad():
        ours, metrics = losses.dpo_loss(load_model(ref_dir), 0.3, rpo_alpha)(
            policy, B.collate_pairs(pairs, ours_tok.pad_token_id))
    assert abs(theirs - 0.6931) > 1e-3 and float(ours) == pytest.approx(theirs, abs=1e-5)
    assert ("nll_loss" in metrics) == bool(rpo_alpha)
