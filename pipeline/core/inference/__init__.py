"""Inference: a generation engine with a paged KV cache and continuous batching, used by
pretraining's samples, the ``generate`` and ``serve`` commands and the OpenAI-compatible server.

    from pipeline.core.inference import Engine, SamplingParams
    engine = Engine.from_dir("results/pretrain/<key>")
    engine.generate(["Once upon a time"], SamplingParams(max_tokens=32, temperature=0))[0].text

kv_cache.py (block pool, block tables, prefix sharing), forward.py (one batched step through
the model's own modules), compiled.py + decode_view.py (the decode step through torch.compile,
EngineConfig.compile), engine.py (scheduling, preemption, detokenization), sampling.py,
offload.py (weights under a device-memory budget), tensor_parallel.py, chat.py (chat
templates), server.py (HTTP, OpenAI's API), cli.py (the generate/serve commands).
"""
from pipeline.core.inference.engine import Completion, Delta, Engine, EngineConfig
from pipeline.core.inference.sampling import SamplingParams

__all__ = ["Completion", "Delta", "Engine", "EngineConfig", "SamplingParams"]
