"""serve: a model as an OpenAI-compatible endpoint and a llama.cpp file, checked and measured.

    python -m pipeline serve model=results/<step>/<key> port=8000     # the long-running server (cli.py)

As a DAG step it exports the model to GGUF, starts the server on a free local port, checks
it with the official openai client (one completion; one streamed chat when the model has a
chat template), measures throughput under ``clients`` concurrent streaming clients, stops
it, and writes ``gguf/model.gguf``, ``serve.json`` (how to launch either server) and stats.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import StageError
from pipeline.core.step import Input, unkeyed

INPUTS = {"model": Input("a model directory (pipeline/model/io.py): pretrain, finetune or compress output")}
VERSION = "1"


@dataclass
class Config:
    # GGUF tensor type: f16 halves the file at no visible cost in llama.cpp; q8_0 quarters it.
    gguf_dtype: str = "f16"
    # Concurrent streaming clients in the throughput check (the engine batches them together).
    clients: int = 8
    max_tokens: int = 32  # new tokens per client request (EOS ignored, so every client gets them all)
    prompt: str = "Once upon a time"
    # The port serve.json's launch commands use; the check itself runs on a free port.
    port: int = unkeyed(8000)
    block_size: int = 16
    max_batch: int = 32
    threads: int = unkeyed(0)  # torch threads (0 = torch's default)
    # Decode through torch.compile (inference/compiled.py), as `python -m pipeline serve` does by
    # default: tens of seconds to compile, then faster steps (benchmarks/generate.py prints both).
    compile: bool = True

    def __post_init__(self):
        from pipeline.model.gguf import DTYPES

        if self.gguf_dtype not in DTYPES:
            raise StageError(f"serve.gguf_dtype must be one of {'|'.join(DTYPES)}, got {self.gguf_dtype!r}")
        for key in ("clients", "max_tokens", "block_size", "max_batch"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise StageError(f"serve.{key} must be an integer >= 1, got {getattr(self, key)!r}")
        if not self.prompt:
            raise StageError("serve.prompt must not be empty")
        if not 0 < self.port < 65536:
            raise StageError(f"serve.port must be a TCP port (1-65535), got {self.port}")


def _client(server):
    try:
        import openai
    except ImportError:
        raise StageError("serve: the check uses the openai client: pip install openai") from None
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=600)


def check(server, cfg: Config, log) -> dict:
    """One completion and, with a chat template, one streamed chat, through the openai client."""
    client = _client(server)
    done = client.completions.create(model=server.model_name, prompt=cfg.prompt, max_tokens=cfg.max_tokens,
                                     temperature=0)
    if done.usage.completion_tokens < 1 or done.choices[0].finish_reason not in ("stop", "length"):
        raise StageError(f"serve: the completion check got no tokens: {done}")
    result = {"completion": cfg.prompt + done.choices[0].text, "completion_tokens": done.usage.completion_tokens,
              "chat_checked": False}
    if server.chat_template is not None:
        chunks = list(client.chat.completions.create(
            model=server.model_name, messages=[{"role": "user", "content": cfg.prompt}],
            max_tokens=cfg.max_tokens, temperature=0, stream=True))
        reply = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        if chunks[-1].choices[0].finish_reason not in ("stop", "length"):
            raise StageError("serve: the streamed chat check did not finish")
        result.update(chat_checked=True, chat_reply=reply)
    log.info("checks passed: %s", json.dumps(result, ensure_ascii=False)[:500])
    return result


def throughput(server, cfg: Config) -> dict:
    """Tokens/s and time to first token under ``clients`` concurrent streaming requests."""
    client = _client(server)
    first, reasons, errors = [None] * cfg.clients, [None] * cfg.clients, []

    def stream(i, t0):
        try:
            for chunk in client.completions.create(model=server.model_name, prompt=cfg.prompt, stream=True,
                                                   max_tokens=cfg.max_tokens, temperature=0.8, seed=i,
                                                   extra_body={"ignore_eos": True}):
                first[i] = first[i] or time.perf_counter() - t0
                reasons[i] = chunk.choices[0].finish_reason or reasons[i]
        except Exception as err:  # reported below, with the others' results
            errors.append(repr(err))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=stream, args=(i, t0)) for i in range(cfg.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors or reasons != ["length"] * cfg.clients:
        raise StageError(f"serve: {len(errors)} of {cfg.clients} streaming clients failed: {errors[:3]} {reasons}")
    tokens = cfg.clients * cfg.max_tokens
    return {"clients": cfg.clients, "tokens": tokens, "wall_s": round(wall, 3), "tokens_per_s": round(tokens / wall, 1),
            "first_token_ms_p50": round(1000 * statistics.median(first), 1),
            "first_token_ms_max": round(1000 * max(first), 1)}


def run(cfg: Config, inputs: dict[str, Path], out: Path, log) -> dict:
    import torch

    from pipeline.core.inference import Engine, EngineConfig
    from pipeline.core.chat import find_template
    from pipeline.core.inference.server import Server
    from pipeline.model.gguf import export_gguf

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model_dir = Path(inputs["model"]).resolve()
    gguf = export_gguf(model_dir, out / "gguf" / "model.gguf", cfg.gguf_dtype)
    log.info("GGUF (%s): %d bytes", cfg.gguf_dtype, gguf.stat().st_size)
    engine = Engine.from_dir(model_dir, EngineConfig(block_size=cfg.block_size, max_batch=cfg.max_batch,
                                                     compile=cfg.compile))
    name = model_dir.name
    server = Server(engine, name, "127.0.0.1", 0, find_template(model_dir), engine.special_token_strings,
                    engine.chat_stop_ids).start()
    try:
        checked = check(server, cfg, log)
        if cfg.compile:  # a round at the measured batch size first: its steps compile, later ones don't
            throughput(server, cfg)
        measured = throughput(server, cfg)
    finally:
        server.close()
    launch = {"model_name": name, "openai_base_url": f"http://127.0.0.1:{cfg.port}/v1",
              "command": f"python -m pipeline serve model={model_dir} port={cfg.port}",
              "gguf": "gguf/model.gguf", "llama_cpp_command": f"llama-server -m {out.name}/gguf/model.gguf --port {cfg.port}"}
    (out / "serve.json").write_text(json.dumps(launch, indent=2))
    compiled = engine.compiled is not None and not engine.compiled.failed and engine.compiled.view.stats["steps"] > 0
    return {"model": name, "gguf_dtype": cfg.gguf_dtype, "gguf_bytes": gguf.stat().st_size, **checked,
            "compiled_decode": compiled,
            "throughput": measured, "kv_cache_bytes_per_token": engine.cache.bytes_per_token(),
            "launch": launch["command"]}
