"""The chat template works in transformers on the exported model; LoRA's merged weights equal
base + adapter."""
import pytest
import torch

from pipeline.core import chat
from pipeline.model.io import load_model
from tests.finetune.helpers import run_finetune

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "5"}]


@pytest.fixture(scope="module")
def sft_dir(base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "sft"
    run_finetune(base_dir, out, train={"steps": 4})
    return out


def test_exported_tokenizer_applies_our_template_with_the_same_ids_and_assistant_mask(sft_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(sft_dir / "hf")
    ours = chat.hf_tokenizer(sft_dir)
    got = hf.apply_chat_template(MESSAGES, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = chat.encode_chat(ours, MESSAGES)
    assert list(got["input_ids"]) == ids and list(got["assistant_masks"]) == mask
    assert hf.convert_ids_to_tokens(ids)[-2:] == ["5", "<|end|>"] and mask[-2:] == [1, 1] and sum(mask) == 2
    prompt = hf.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|bos|><|system|>Be brief.<|end|><|user|>What is 2 + 3?<|end|><|assistant|>"


def test_hf_generate_on_the_export_gives_our_greedy_reply_and_stops_at_end_of_turn(sft_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(sft_dir / "hf")
    model = AutoModelForCausalLM.from_pretrained(sft_dir / "hf", dtype=torch.float32).eval()
    ids = tok.apply_chat_template(MESSAGES[1:2], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    theirs = model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1]:].tolist()
    end = tok.convert_tokens_to_ids("<|end|>")
    assert end in model.generation_config.eos_token_id
    ours = load_model(sft_dir).generate(ids["input_ids"], 8, temperature=0.0, eos_id=end)[0, ids["input_ids"].shape[1]:].tolist()
    assert theirs[:len(ours)] == ours[:len(theirs)]


def test_lora_merged_model_gives_the_logits_of_base_plus_adapter(base_dir, tmp_path):
    from peft import PeftModel

    from pipeline.finetune.models import load_token_rows

    out = tmp_path / "lora"
    # lr high enough that the adapter moves the logits visibly
    run_finetune(base_dir, out, method="lora", lora={"rank": 4}, train={"steps": 4, "lr": 0.05})
    x = torch.randint(8, 400, (2, 20), generator=torch.Generator().manual_seed(0))
    base = load_model(base_dir)
    # the adapter applies to the base with the chat-token rows trained beside it
    with_adapter = PeftModel.from_pretrained(load_token_rows(load_model(base_dir), out / "adapter"),
                                             str(out / "adapter")).eval()
    merged = load_model(out)
    with torch.no_grad():
        a, m, b = with_adapter(x)[0], merged(x)[0], base(x)[0]
    assert (a - b).abs().max() > 1e-3  # the adapter changed something
    # fp32 rounding of W + BA merged once vs applied per call: ~3e-5 here, against a change > 1e-3
    assert torch.allclose(m, a, atol=1e-4, rtol=1e-5), (m - a).abs().max()
