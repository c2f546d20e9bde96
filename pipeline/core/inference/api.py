"""OpenAI's completions and chat-completions protocol: requests checked into engine inputs,
results and stream chunks shaped as OpenAI's (and vLLM's) server returns them.

Every problem with a request is an ``ApiError`` with an HTTP status and OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``, so clients (the openai package) raise
their usual exceptions with our message.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from pipeline.core.inference.chat import render_chat
from pipeline.core.inference.sampling import SamplingParams


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error",
                405: "invalid_request_error"}.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class Job:
    """What the engine is asked for: token ids of each prompt and how to sample."""

    kind: str  # completion | chat
    prompts: list[list[int]]
    params: SamplingParams
    stream: bool
    model: str
    id: str
    created: int


def _field(body: dict, name: str, types, default=None):
    types = types if isinstance(types, tuple) else (types,)
    value = body.get(name, default)
    if value is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
        raise ApiError(400, f"'{name}' has the wrong type ({type(value).__name__})", param=name)
    return value


def _params(body: dict, default_max: int, room: int, extra_stop_ids=()) -> SamplingParams:
    """Sampling settings; ``room``: tokens left in the context after the longest prompt."""
    for unsupported in ("logprobs", "top_logprobs", "tools", "functions", "suffix", "best_of"):
        if body.get(unsupported) not in (None, False, 0):
            raise ApiError(400, f"'{unsupported}' is not supported by this server", param=unsupported)
    if body.get("n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", param="n")
    max_tokens = _field(body, "max_completion_tokens", int) or _field(body, "max_tokens", int, default_max)
    if max_tokens is not None and max_tokens > room:
        raise ApiError(400, f"max_tokens={max_tokens} does not fit: the model's context leaves {room} tokens "
                            "after the prompt; ask for fewer", param="max_tokens")
    stop = _field(body, "stop", (str, list)) or []
    try:
        return SamplingParams(
            max_tokens=max_tokens if max_tokens is not None else room,
            temperature=_field(body, "temperature", (int, float), 1.0),
            top_p=_field(body, "top_p", (int, float), 1.0), top_k=_field(body, "top_k", int, 0) or 0,
            seed=_field(body, "seed", int), stop=[stop] if isinstance(stop, str) else stop,
            stop_token_ids=list(extra_stop_ids) + list(_field(body, "stop_token_ids", list, [])),
            ignore_eos=bool(_field(body, "ignore_eos", bool, False)))
    except ValueError as err:
        raise ApiError(400, str(err), param=str(err).split()[0]) from None


def _prompt_ids(encode, prompt, context: int) -> list[int]:
    if isinstance(prompt, str):
        if not prompt:
            raise ApiError(400, "the prompt is empty", param="prompt")
        ids = encode(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        ids = prompt
    else:
        raise ApiError(400, "prompt must be a non-empty string, a list of them, or a list of token ids", param="prompt")
    if len(ids) >= context:
        raise ApiError(400, f"the prompt has {len(ids)} tokens but the model's context is {context} tokens "
                            "(prompt + at least one new token); shorten it", param="prompt",
                       code="context_length_exceeded")
    return ids


def completion_job(body: dict, engine, model: str) -> Job:
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(400, "'prompt' is required", param="prompt")
    many = isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt)
    prompts = [_prompt_ids(engine.encode, p, engine.context) for p in (prompt if many else [prompt])]
    room = engine.context - max(len(p) for p in prompts)
    params = _params(body, 16, room)
    return Job("completion", prompts, params, bool(body.get("stream")), model, f"cmpl-{uuid.uuid4().hex}",
               int(time.time()))


def chat_job(body: dict, engine, model: str, template: str | None, specials: dict, stop_ids) -> Job:
    if template is None:
        raise ApiError(400, f"model '{model}' has no chat template (it was not chat fine-tuned); "
                            "use /v1/completions with a plain prompt", param="messages", code="no_chat_template")
    try:
        text = render_chat(template, body.get("messages"), specials)
    except ValueError as err:
        raise ApiError(400, str(err), param="messages") from None
    ids = _prompt_ids(lambda t: engine.encode(t, special=False), text, engine.context)
    params = _params(body, None, engine.context - len(ids), stop_ids)
    return Job("chat", [ids], params, bool(body.get("stream")), model, f"chatcmpl-{uuid.uuid4().hex}",
               int(time.time()))


def response(job: Job, results: list[dict]) -> dict:
    """results: per prompt {"text", "finish_reason", "prompt_tokens", "completion_tokens"}."""
    usage = {"prompt_tokens": sum(r["prompt_tokens"] for r in results),
             "completion_tokens": sum(r["completion_tokens"] for r in results)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if job.kind == "chat":
        choices = [{"index": i, "message": {"role": "assistant", "content": r["text"]}, "logprobs": None,
                    "finish_reason": r["finish_reason"]} for i, r in enumerate(results)]
        obj = "chat.completion"
    else:
        choices = [{"index": i, "text": r["text"], "logprobs": None, "finish_reason": r["finish_reason"]}
                   for i, r in enumerate(results)]
        obj = "text_completion"
    return {"id": job.id, "object": obj, "created": job.created, "model": job.model, "choices": choices,
            "usage": usage}


def chunk(job: Job, index: int, text: str | None, finish_reason: str | None, first: bool = False) -> dict:
    """One server-sent event's payload."""
    if job.kind == "chat":
        delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        obj = "text_completion"
    return {"id": job.id, "object": obj, "created": job.created, "model": job.model, "choices": [choice]}
