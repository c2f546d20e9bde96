"""Serving: each served model's GGUF export, the openai-client checks, and throughput under
concurrent streaming clients, with the command that launches the server."""
from pipeline.report.blocks import Heading, Para, Pre, Table


def render(ctx):
    runs = ctx.stage_dirs("serve")
    if not runs:
        return []
    rows, launches = [], []
    for label, d in runs:
        s = ctx.stats(d)
        t = s["throughput"]
        rows.append([label, s["model"], s["gguf_dtype"], round(s["gguf_bytes"] / 2**20, 2),
                     "yes" if s["chat_checked"] else "no template", t["clients"], t["tokens_per_s"],
                     t["first_token_ms_p50"], t["first_token_ms_max"],
                     "compiled" if s.get("compiled_decode") else "eager"])
        launches.append(f"{label}: {s['launch']}")
    return [
        Heading("Serving"),
        Para("Each served model was exported to GGUF (llama.cpp's format) and served over OpenAI's API by "
             "the engine (paged KV cache, continuous batching); the official openai client checked one "
             "completion and, for chat models, one streamed chat, then the listed number of clients "
             "streamed concurrently (after an untimed round when the decode step is compiled, so compiling is not "
             "counted). First-token times are from request start, all clients starting together."),
        Table(["step", "model", "GGUF", "GGUF MiB", "chat", "clients", "tokens/s", "first token p50 ms",
               "first token max ms", "decode step"], rows),
        Pre("\n".join(launches)),
    ]
