"""model: the decoder-only transformer, the encoder-decoder, size presets, Hugging Face export/import.

    python -m pipeline model                  every preset (conf/model/) with its parameter count and
                                              training FLOPs per token, computed from the shapes
    python -m pipeline model model=cpu_10m    one preset's resolved config and sizes

The model is a top-level config group, not a stage: the stages that build or read a model
(pretrain) get ``model: ${model}`` in their step config (conf/dag/), so it lands in their keys.
"""
from __future__ import annotations

from pipeline.model.config import Config

__all__ = ["Config", "Transformer", "EncoderDecoder", "build", "describe", "main"]


def __getattr__(name: str):
    # The models (and torch) load on first use: composing configs needs only Config.
    if name == "Transformer":
        from pipeline.model.transformer import Transformer

        return Transformer
    if name == "EncoderDecoder":
        from pipeline.model.encoder_decoder import EncoderDecoder

        return EncoderDecoder
    raise AttributeError(f"module 'pipeline.model' has no attribute {name!r}")


def build(cfg):
    """The model ``cfg.arch`` names (Transformer, or EncoderDecoder) from a Config, a dict or an
    OmegaConf node (how a stage receives it)."""
    if not isinstance(cfg, Config):
        if not isinstance(cfg, dict):
            from omegaconf import OmegaConf

            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = Config(**cfg)
    if cfg.arch == "encoder_decoder":
        from pipeline.model.encoder_decoder import EncoderDecoder

        return EncoderDecoder(cfg)
    from pipeline.model.transformer import Transformer

    return Transformer(cfg)


def describe(cfg: Config) -> dict:
    """Sizes of a config, computed on the meta device (no memory, so 1B+ presets are instant)."""
    import torch

    with torch.device("meta"):
        model = build(cfg)
    return {
        "params": model.num_params(),
        "non_embedding_params": model.num_params(non_embedding=True),
        "flops_per_token": model.flops_per_token(),
    }


def main(argv: list[str]) -> int:
    from pathlib import Path

    from omegaconf import OmegaConf

    from pipeline.config import CONF_DIR, compose

    if "-h" in argv or "--help" in argv:
        print(__doc__.strip())
        return 0
    chosen = [a.split("=", 1)[1] for a in argv if a.startswith("model=")]
    presets = chosen or sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))
    extra = [a for a in argv if not a.startswith("model=")]
    print(f"{'preset':<12} {'params':>14} {'non-emb':>14} {'GFLOP/token':>12}  d_model x n_layer, heads/kv, d_mlp, vocab, seq")
    for name in presets:
        m = compose([f"model={name}", *extra]).model
        cfg = Config(**OmegaConf.to_container(m, resolve=True))
        s = describe(cfg)
        print(f"{name:<12} {s['params']:>14,} {s['non_embedding_params']:>14,} {s['flops_per_token'] / 1e9:>12.4f}  "
              f"{cfg.d_model}x{cfg.n_layer}, {cfg.n_head}/{cfg.n_kv_head}, {cfg.d_mlp}, {cfg.vocab_size}, {cfg.max_seq_len}")
        if chosen:
            print(OmegaConf.to_yaml(m, resolve=True))
    return 0
