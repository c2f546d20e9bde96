"""The encoder-decoder: T5's computation (transformers is the reference), its masks, its export,
its model directory, and the options it refuses."""
import pytest
import torch
import torch.nn.functional as F

from pipeline.core.errors import StageError
from pipeline.model import Config, EncoderDecoder, Transformer, build
from pipeline.model.encoder_decoder import relative_buckets
from pipeline.model.hf import export_hf
from pipeline.tokenize.bpe import train_bpe

torch.set_num_threads(1)
SPECIALS = ["<|bos|>", "<|endoftext|>", "<|pad|>", "<|sentinel_0|>"]
TINY = dict(vocab_size=320, n_layer=2, n_head=4, n_kv_head=2, d_model=64, d_mlp=128, max_seq_len=48,
            arch="encoder_decoder", pos_emb="relative")


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    tok = train_bpe(["the quick brown fox jumps over the lazy dog " * 20], 300, SPECIALS, "gpt4", bos_token="<|bos|>")
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def tiny(**kw) -> EncoderDecoder:
    torch.manual_seed(0)
    model = build(Config(**{**TINY, **kw})).eval()
    with torch.no_grad():  # norms start at 1 and biases small: perturb them so a misplaced one shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
            elif name.endswith("_bias.weight"):
                p.normal_()
    return model


def test_buckets_are_t5s():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = torch.arange(-300, 300)[None, :] - torch.arange(0, 40)[:, None]
    for bidirectional in (True, False):
        theirs = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional)
        assert torch.equal(relative_buckets(rel, bidirectional), theirs)


@pytest.mark.parametrize("kv_heads", [2, 4], ids=["gqa", "mha"])
def test_t5_loads_the_export_and_matches_our_logits(tmp_path, tokenizer_json, kv_heads):
    from transformers import AutoModelForSeq2SeqLM

    model = tiny(n_kv_head=kv_heads)
    export_hf(model, tokenizer_json, tmp_path / "hf")
    hf = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(hf).__name__ == "T5ForConditionalGeneration"
    repeated = 3 * 2 * 2 * 64 * 16 * (4 - kv_heads)  # k and v of 3 attentions x 2 layers, widened
    assert sum(p.numel() for p in hf.parameters()) == model.num_params() + repeated
    enc, dec = torch.randint(0, 320, (2, 40)), torch.randint(0, 320, (2, 30))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 25:] = False  # a padded row
    with torch.no_grad():
        ours, _ = model(enc, dec, enc_mask=mask)
        theirs = hf(input_ids=enc, attention_mask=mask.long(), decoder_input_ids=dec).logits
    assert ours.std() > 0.1
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    assert hf.config.decoder_start_token_id == 2  # the pad token, as T5


def _changed_positions(model, enc, dec, which: str, position: int) -> list[int]:
    with torch.no_grad():
        base, _ = model(enc, dec)
        enc2, dec2 = enc.clone(), dec.clone()
        target = enc2 if which == "enc" else dec2
        target[0, position] = (target[0, position] + 1) % 320
        after, _ = model(enc2, dec2)
    return [t for t in range(dec.shape[1]) if not torch.allclose(base[0, t], after[0, t])]


def test_the_decoder_sees_every_input_token_and_only_its_own_past():
    model = tiny()
    enc, dec = torch.randint(0, 320, (1, 12)), torch.randint(0, 320, (1, 10))
    assert _changed_positions(model, enc, dec, "enc", 11) == list(range(10))  # bidirectional encoder
    assert _changed_positions(model, enc, dec, "dec", 4) == list(range(4, 10))  # causal decoder


def test_padding_in_the_encoder_changes_nothing():
    model = tiny()
    enc, dec = torch.randint(0, 320, (1, 9)), torch.randint(0, 320, (1, 6))
    padded = torch.cat([enc, torch.full((1, 5), 2)], dim=1)
    mask = torch.tensor([[True] * 9 + [False] * 5])
    with torch.no_grad():
        torch.testing.assert_close(model(padded, dec, enc_mask=mask)[0], model(enc, dec)[0], atol=1e-5, rtol=0)


def test_fused_loss_is_the_cross_entropy_of_the_logits_and_reaches_every_parameter():
    model = tiny().train()
    enc, dec, targets = torch.randint(0, 320, (2, 12)), torch.randint(0, 320, (2, 8)), torch.randint(0, 320, (2, 8))
    targets[1, 5:] = -100
    logits, _ = model(enc, dec)
    _, loss = model(enc, dec, targets)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 320), targets.reshape(-1)), atol=1e-5, rtol=0)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_model_directory_round_trip_and_decoder_readers_refuse_it(tmp_path, tokenizer_json):
    from pipeline.model.io import load_model, save_model_dir

    model = tiny()
    save_model_dir(tmp_path / "m", model, tokenizer_json, {"special_tokens": {"pad": 2}})
    with pytest.raises(StageError, match="holds an encoder_decoder model.*decoder models only"):
        load_model(tmp_path / "m")
    again = load_model(tmp_path / "m", archs=("decoder", "encoder_decoder"))
    enc, dec = torch.randint(0, 320, (1, 7)), torch.randint(0, 320, (1, 5))
    with torch.no_grad():
        assert torch.equal(again(enc, dec)[0], model(enc, dec)[0])
    assert (tmp_path / "m" / "hf" / "config.json").is_file()


@pytest.mark.parametrize("change, message", [
    ({"pos_emb": "rope"}, "needs pos_emb=relative"),
    ({"qk_norm": True}, "needs qk_norm=false"),
    ({"tie_embeddings": False}, "needs tie_embeddings=true"),
    ({"attention": "prefix"}, "needs attention=causal"),
    ({"prompt_tokens": 4}, "needs prompt_tokens=0"),
])
def test_options_t5_cannot_hold_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        Config(**{**TINY, **change}).validate()


def test_each_family_refuses_the_others_options():
    with pytest.raises(ValueError, match="pos_emb=relative is the encoder-decoder's"):
        Config(pos_emb="relative").validate()
    with pytest.raises(ValueError, match="built by pipeline.model.build"):
        Transformer(Config(**TINY))
    assert type(build(Config(**{**TINY, "arch": "decoder", "pos_emb": "rope"}))).__name__ == "Transformer"
