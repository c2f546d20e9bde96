"""Prompt tuning and prefix tuning: the model's virtual tokens (prompt_tokens, prefix_tokens),
trained alone by finetune method=prompt|prefix, saved and loaded like any weight, and equal to
peft's PromptTuning / PrefixTuning on the transformers export."""
import pytest
import torch

from pipeline.model import Config
from pipeline.model.io import load_model
from pipeline.model.transformer import Transformer
from tests.finetune.helpers import run_finetune

VIRTUAL = {"prompt": lambda cfg, n: n * cfg.d_model,
           "prefix": lambda cfg, n: cfg.n_layer * 2 * cfg.n_kv_head * n * cfg.head_dim}


def _tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(Config(**{"vocab_size": 64, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "d_model": 32,
                                 "d_mlp": 64, "max_seq_len": 16, "kernels": "torch", **kw}))


@pytest.mark.parametrize("key", ["prompt_tokens", "prefix_tokens"])
def test_virtual_tokens_copying_real_text_equal_that_text_before_the_input(key):
    """A soft prompt set to some tokens' embeddings, or a prefix set to a model's keys and values
    of them, gives the logits of the plain model with those tokens prepended."""
    from pipeline.finetune.models import text_keys_values

    base, model = _tiny(), _tiny(**{key: 3})
    model.load_state_dict(base.state_dict(), strict=False)
    text, x = torch.tensor([5, 9, 2]), torch.randint(0, 64, (2, 16))  # the whole context after them
    with torch.no_grad():
        if key == "prompt_tokens":
            model.prompt.copy_(base.embed.weight[text])
        else:
            for block, (k, v) in zip(model.blocks, text_keys_values(base, text)):
                block.attn.prefix_k.copy_(k)
                block.attn.prefix_v.copy_(v)
        ours = model(x)[0]
        reference = _tiny(max_seq_len=19)
        reference.load_state_dict(base.state_dict())
        theirs = reference(torch.cat([text.expand(2, -1), x], 1))[0][:, 3:]
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert model.generate(x[:, :4], 3, temperature=0.0).shape == (2, 7)


def test_the_transformers_export_refuses_virtual_tokens_before_writing_anything(tmp_path):
    from pipeline.model.hf import export_hf

    with pytest.raises(ValueError, match="prompt_tokens/prefix_tokens have no transformers equivalent"):
        export_hf(_tiny(prompt_tokens=2), tmp_path / "tokenizer.json", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_only_the_virtual_tokens_train_and_the_saved_model_reloads_and_equals_peft(method, base_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pipeline.core import chat
    from pipeline.finetune.models import chat_token_ids

    out = tmp_path / method
    stats = run_finetune(base_dir, out, method=method, virtual_tokens=4, tasks=["uppercase"], trainable_tokens="chat",
                         train={"steps": 4, "lr": 0.05})
    base, tuned = load_model(base_dir), load_model(out)
    assert getattr(tuned.cfg, f"{method}_tokens") == 4
    rows = chat_token_ids(chat.hf_tokenizer(base_dir))  # bos and the chat markers train beside them
    assert stats["trainable_params"] == VIRTUAL[method](base.cfg, 4) + len(rows) * base.cfg.d_model
    frozen = {k: v for k, v in tuned.state_dict().items() if k in base.state_dict()}
    assert len(frozen) == len(base.state_dict())
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in frozen.items() if k not in ("embed.weight", "lm_head.weight"))
    changed = (tuned.embed.weight != base.embed.weight).any(-1).nonzero().flatten().tolist()
    assert changed and set(changed) <= set(rows) and tuned.lm_head.weight is tuned.embed.weight
    assert not (out / "hf").exists() and (out / "adapter" / "adapter_config.json").is_file()

    x = torch.randint(8, 400, (2, 20))
    hf = AutoModelForCausalLM.from_pretrained(out / "adapter" / "base", dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf, str(out / "adapter")).eval()
    with torch.no_grad():
        ours, before, theirs = tuned(x)[0], base(x)[0], peft_model(input_ids=x).logits[:, -20:]
    assert (ours - before).abs().max() > 1e-3  # the virtual tokens change the model
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=1e-5)
    assert set(stats["heldout_exact_match"]["after"]) == {"uppercase"}


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_training_the_virtual_tokens_alone_lowers_the_loss(method):
    """Gradients reach the virtual tokens and steer the frozen model (init_std 0.3: a random
    model with the usual 0.02 barely reacts to anything before it)."""
    from pipeline.finetune.models import virtual_model

    model = virtual_model(_tiny(init_std=0.3), method, 4, [1, 2, 3])
    x = torch.randint(0, 64, (4, 12))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    losses = []
    for _ in range(30):
        loss = model(x, x.roll(-1, 1))[1]
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses


@pytest.mark.parametrize("key", ["prompt_tokens", "prefix_tokens"])
def test_the_inference_engine_generates_what_the_model_does(key, token_dir):
    """Virtual tokens open every sequence in the engine too (paged cache, prompts of different
    lengths batched, the shared virtual block): its greedy tokens are the model's own."""
    from tokenizers import Tokenizer

    from pipeline.core.inference.engine import Engine, EngineConfig
    from pipeline.core.inference.sampling import SamplingParams

    torch.manual_seed(0)
    model = Transformer(Config(vocab_size=400, n_layer=2, n_head=4, n_kv_head=2, d_model=32, d_mlp=64,
                               max_seq_len=48, kernels="torch", init_std=0.3, **{key: 5})).eval()
    tok = Tokenizer.from_file(str(token_dir / "tokenizer.json"))
    engine = Engine(model, tok, EngineConfig(block_size=4, max_batch=3))
    prompts = [torch.randint(0, 400, (n,)).tolist() for n in (3, 7, 7, 12)]
    got = engine.generate(prompts, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True))
    for prompt, completion in zip(prompts, got):
        want = model.generate(torch.tensor([prompt]), 6, temperature=0.0)[0, len(prompt):].tolist()
        assert completion.token_ids == want and completion.prompt_tokens == len(prompt)
