"""An OpenAI-compatible HTTP server on the engine: /v1/models, /v1/completions,
/v1/chat/completions, streaming as server-sent events, bound to 127.0.0.1 by default.

    python -m pipeline serve model=results/pretrain/<key> port=8000
    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.completions.create(model="<key>", prompt="Once upon a time", max_tokens=32)

One thread owns the engine and runs its steps; connection threads (the standard library's
ThreadingHTTPServer) hand it requests through a queue and read their tokens back from a
queue per request, so requests from every client share each decoding step (continuous
batching) and a bad request is answered with a 4xx and OpenAI's error body without
touching the others. A client that disconnects mid-stream has its request aborted.
"""
from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.core.inference import api
from pipeline.core.inference.api import ApiError

log = logging.getLogger("lmdag.serve")
MAX_BODY = 4 * 2**20  # bytes: a request is text; anything larger is a mistake or abuse


class EngineLoop:
    """The one thread that calls the engine."""

    def __init__(self, engine):
        self.engine = engine
        self.inbox: queue.Queue = queue.Queue()
        self.outboxes: dict[str, tuple[queue.Queue, int]] = {}
        self.thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self.running = True
        self.thread.start()

    def submit(self, prompts: list[list[int]], params, outbox: queue.Queue) -> None:
        self.inbox.put(("add", prompts, params, outbox))

    def abort(self, request_ids: list[str]) -> None:
        self.inbox.put(("abort", request_ids))

    def stop(self) -> None:
        self.running = False
        self.inbox.put(("stop",))
        self.thread.join(timeout=10)

    def _handle(self, command) -> None:
        if command[0] == "add":
            _, prompts, params, outbox = command
            for index, ids in enumerate(prompts):
                rid = self.engine.add_request(ids, params)
                self.outboxes[rid] = (outbox, index)
                outbox.put(("id", index, rid))
        elif command[0] == "abort":
            for rid in command[1]:
                self.engine.abort(rid)
                self.outboxes.pop(rid, None)

    def _run(self) -> None:
        while self.running:
            try:
                command = self.inbox.get(timeout=None if not self.engine.has_work() else 0)
            except queue.Empty:
                command = None
            while command is not None:
                try:
                    self._handle(command)
                except Exception as err:  # a request the engine refused: only its client hears
                    command[-1].put(("error", err)) if command[0] == "add" else log.exception("engine command")
                try:
                    command = self.inbox.get_nowait()
                except queue.Empty:
                    command = None
            if not self.running:
                break
            if self.engine.has_work():
                self._step()

    def _step(self) -> None:
        try:
            deltas = self.engine.step()
        except Exception as err:  # keep serving: fail what was running, log why
            log.exception("engine step failed")
            for rid in list(self.outboxes):
                self.engine.abort(rid)
                self.outboxes.pop(rid)[0].put(("failed", err))
            return
        for d in deltas:
            outbox, index = self.outboxes.get(d.request_id, (None, 0))
            if outbox is not None:
                outbox.put(("delta", index, d))
                if d.finished:
                    del self.outboxes[d.request_id]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Server"

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send_json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(411 if length is None else 400, "a JSON body with a Content-Length is required")
        if int(length) > MAX_BODY:
            self.close_connection = True  # the unread body would be parsed as the next request
            raise ApiError(413, f"the body is {length} bytes; at most {MAX_BODY} are accepted")
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ApiError(400, f"the body is not UTF-8 (byte {err.start}: {raw[err.start:err.start + 1]!r})") from None
        except json.JSONDecodeError as err:
            raise ApiError(400, f"the body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the body must be a JSON object")
        return body

    def do_GET(self):
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [self.server.model_card()]})
        elif self.path == "/health":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_json(404, ApiError(404, f"no route {self.path}").body())

    def do_POST(self):
        try:
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                raise ApiError(404, f"no route {self.path}; POST /v1/completions or /v1/chat/completions")
            body = self._body()
            job = self.server.job(self.path, body)
            self._stream(job) if job.stream else self._complete(job)
        except ApiError as err:
            log.warning("%s %s: %d %s", self.command, self.path, err.status, err.message)
            self._send_json(err.status, err.body())
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as err:  # a bug: the client gets a 500 and the server keeps serving
            log.exception("%s %s failed", self.command, self.path)
            self._send_json(500, ApiError(500, f"internal error: {type(err).__name__}: {err}").body())

    def _collect(self, job, outbox):
        """(index, delta) pairs as the engine makes them; raises ApiError if it refused the job."""
        ids, done = {}, 0
        while done < len(job.prompts):
            kind, *rest = outbox.get()
            if kind in ("error", "failed"):  # refused (a bad request) or the engine broke (ours)
                self.server.loop.abort(list(ids.values()))
                raise ApiError(400 if kind == "error" else 500, str(rest[0]))
            if kind == "id":
                ids[rest[0]] = rest[1]
                continue
            index, delta = rest
            done += delta.finished
            yield index, delta, ids

    def _complete(self, job) -> None:
        outbox: queue.Queue = queue.Queue()
        self.server.loop.submit(job.prompts, job.params, outbox)
        results = [{"text": "", "finish_reason": None, "prompt_tokens": len(p), "completion_tokens": 0}
                   for p in job.prompts]
        for index, delta, _ in self._collect(job, outbox):
            results[index]["text"] += delta.text
            results[index]["completion_tokens"] += len(delta.token_ids)
            results[index]["finish_reason"] = delta.finish_reason
        self._send_json(200, api.response(job, results))

    def _stream(self, job) -> None:
        outbox: queue.Queue = queue.Queue()
        self.server.loop.submit(job.prompts, job.params, outbox)
        events = self._collect(job, outbox)
        first = next(events)  # an engine refusal still gets a proper 4xx, before any event
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        ids = first[2]
        try:
            if job.kind == "chat":
                self._event(api.chunk(job, 0, None, None, first=True))
            for index, delta, ids in itertools.chain([first], events):
                if delta.text or delta.finished:
                    self._event(api.chunk(job, index, delta.text, delta.finish_reason))
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            log.info("client left mid-stream: aborting %s", list(ids.values()))
            self.server.loop.abort(list(ids.values()))

    def _event(self, payload: dict) -> None:
        self.wfile.write(b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n")
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, engine, model_name: str, host: str = "127.0.0.1", port: int = 8000,
                 chat_template: str | None = None, special_tokens: dict | None = None, chat_stop_ids=()):
        super().__init__((host, port), Handler)
        self.engine, self.model_name = engine, model_name
        self.chat_template, self.special_tokens, self.chat_stop_ids = chat_template, special_tokens or {}, chat_stop_ids
        self.loop = EngineLoop(engine)
        self.created = int(time.time())

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "lmdag",
                "max_model_len": self.engine.context}

    def job(self, path: str, body: dict):
        model = body.get("model")
        if model != self.model_name:
            raise ApiError(404, f"the model '{model}' does not exist; this server has '{self.model_name}'",
                           param="model", code="model_not_found")
        if path == "/v1/chat/completions":
            return api.chat_job(body, self.engine, model, self.chat_template, self.special_tokens, self.chat_stop_ids)
        return api.completion_job(body, self.engine, model)

    def start(self) -> "Server":
        threading.Thread(target=self.serve_forever, name="http", daemon=True).start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.loop.stop()
