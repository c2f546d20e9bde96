"""The OpenAI-compatible server through the official openai client, streaming and not; bad
requests between good ones; many concurrent streams; a client leaving mid-stream."""
import http.client
import json
import shutil
import threading

import openai
import pytest

from pipeline.core.inference import Engine, SamplingParams
from pipeline.core.inference.chat import render_chat
from pipeline.core.inference.server import Server

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
PROMPT = "Once upon a time there was a café"


@pytest.fixture(scope="module")
def chat_model_dir(model_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("chat") / "tiny-chat"
    shutil.copytree(model_dir, d)
    (d / "chat_template.jinja").write_text(TEMPLATE)
    return d


@pytest.fixture(scope="module")
def server(chat_model_dir):
    from pipeline.core.chat import find_template

    engine = Engine.from_dir(chat_model_dir)
    srv = Server(engine, "tiny-chat", port=0, chat_template=find_template(chat_model_dir),
                 special_tokens=engine.special_token_strings, chat_stop_ids=engine.chat_stop_ids).start()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def reference(chat_model_dir):
    return Engine.from_dir(chat_model_dir)


def test_the_model_is_listed(client):
    assert [m.id for m in client.models.list()] == ["tiny-chat"]


def test_completion_equals_the_engine_streamed_or_not(client, reference):
    expected = reference.generate([PROMPT], SamplingParams(max_tokens=12, temperature=0))[0]
    got = client.completions.create(model="tiny-chat", prompt=PROMPT, max_tokens=12, temperature=0)
    assert got.choices[0].text == expected.text and got.choices[0].finish_reason == expected.finish_reason
    assert got.usage.prompt_tokens == expected.prompt_tokens
    assert got.usage.completion_tokens == len(expected.token_ids)
    chunks = list(client.completions.create(model="tiny-chat", prompt=PROMPT, max_tokens=12, temperature=0,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == expected.finish_reason


def test_seeded_sampling_and_several_prompts(client, reference):
    params = SamplingParams(max_tokens=10, temperature=0.9, top_p=0.9, seed=7)
    expected = [c.text for c in reference.generate(["the quick", "def main"], params)]
    got = client.completions.create(model="tiny-chat", prompt=["the quick", "def main"], max_tokens=10,
                                    temperature=0.9, top_p=0.9, seed=7)
    assert [c.text for c in sorted(got.choices, key=lambda c: c.index)] == expected


def test_chat_renders_the_template_streamed_or_not(client, reference, server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about the fox."}]
    ids = reference.encode(render_chat(TEMPLATE, messages, reference.special_token_strings), special=False)
    params = SamplingParams(max_tokens=15, temperature=0, stop_token_ids=reference.chat_stop_ids)
    expected = reference.generate([ids], params)[0]
    got = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=15, temperature=0)
    assert got.choices[0].message.role == "assistant" and got.choices[0].message.content == expected.text
    stream = list(client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=15,
                                                 temperature=0, stream=True))
    assert stream[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in stream) == expected.text
    assert stream[-1].choices[0].finish_reason == expected.finish_reason


def raw_post(server, path, body: bytes, headers=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    status, payload = resp.status, json.loads(resp.read())
    conn.close()
    return status, payload


def test_bad_requests_get_4xx_with_openai_error_bodies_between_good_ones(client, server, reference):
    good = lambda: client.completions.create(model="tiny-chat", prompt="the quick", max_tokens=4, temperature=0)
    expected = reference.generate(["the quick"], SamplingParams(max_tokens=4, temperature=0))[0].text
    assert good().choices[0].text == expected
    cases = [
        (dict(prompt=""), openai.BadRequestError, "prompt is empty"),
        (dict(prompt="fox " * 400), openai.BadRequestError, "context is 96 tokens"),
        (dict(prompt="the quick", max_tokens=10**9), openai.BadRequestError, "does not fit"),
        (dict(prompt="the quick", max_tokens=0), openai.BadRequestError, "max_tokens"),
        (dict(prompt="the quick", temperature=-1), openai.BadRequestError, "temperature"),
        (dict(prompt="the quick", model="gpt-4"), openai.NotFoundError, "'gpt-4' does not exist"),
        (dict(prompt="the quick", n=3), openai.BadRequestError, "n=1"),
        (dict(prompt=[5, 10**6]), openai.BadRequestError, r"token ids must be in \[0, 384\)"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message) as info:
            client.completions.create(**{"model": "tiny-chat", "max_tokens": 4, **kwargs})
        assert info.value.body["type"] == "invalid_request_error"
        assert good().choices[0].text == expected  # the server still serves
    for body, message in [(b'{"model": "tiny-chat", "prompt": "caf\xe9"}', "not UTF-8"),
                          (b'{"model": "tiny-chat", "prompt": ', "not valid JSON"), (b"[1, 2]", "JSON object")]:
        status, payload = raw_post(server, "/v1/completions", body)
        assert status == 400 and message in payload["error"]["message"]
        assert good().choices[0].text == expected
    status, payload = raw_post(server, "/v1/completions", b"{}", {"Content-Length": str(10**9)})
    assert status == 413 and "at most" in payload["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="tiny-chat", messages=[{"content": "hi"}])
    assert good().choices[0].text == expected


def test_chat_without_a_template_is_a_clear_400(plain_model_dir):
    srv = Server(Engine.from_dir(plain_model_dir), "plain", port=0).start()
    try:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="no chat template"):
            client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}])
        assert client.completions.create(model="plain", prompt="hi", max_tokens=2).choices[0].finish_reason
    finally:
        srv.close()


def test_concurrent_streams_are_batched_and_each_gets_its_own_tokens(client, server, reference):
    prompts = [f"{w} quick brown" for w in ("the", "a", "one", "pack", "def", "Once", "my", "box")]
    expected = [c.text for c in reference.generate(prompts, SamplingParams(max_tokens=20, temperature=0))]
    got, errors = [None] * len(prompts), []

    def stream(i):
        try:
            chunks = client.completions.create(model="tiny-chat", prompt=prompts[i], max_tokens=20, temperature=0,
                                               stream=True)
            got[i] = "".join(c.choices[0].text for c in chunks)
        except Exception as err:  # surfaced below
            errors.append(err)

    before = server.engine.stats["peak_running"]
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(prompts))]
    server.engine.stats["peak_running"] = 0
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and got == expected
    assert server.engine.stats["peak_running"] > 1 or before > 1


def test_a_client_leaving_mid_stream_frees_its_request(server, monkeypatch):
    step = server.engine.step
    monkeypatch.setattr(server.engine, "step", lambda: (threading.Event().wait(0.02), step())[1])  # ~2 s for 80 tokens
    aborted = server.engine.stats["aborted"]
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    body = json.dumps({"model": "tiny-chat", "prompt": PROMPT, "max_tokens": 80, "temperature": 0.7,
                       "stream": True, "ignore_eos": True})
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    resp.close()
    conn.close()
    for _ in range(200):  # the engine notices on its next write and aborts the request
        if not server.engine.has_work():
            break
        threading.Event().wait(0.05)
    assert not server.engine.has_work() and server.engine.stats["aborted"] == aborted + 1
    assert server.engine.cache.allocator.num_free == server.engine.cache.num_blocks


def test_an_engine_failure_is_a_500_and_the_server_recovers(client, server, monkeypatch):
    step, calls = server.engine.step, []

    def broken_once():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated kernel failure")
        return step()

    monkeypatch.setattr(server.engine, "step", broken_once)
    with pytest.raises(openai.InternalServerError, match="simulated kernel failure"):
        client.completions.create(model="tiny-chat", prompt="the quick", max_tokens=4)
    assert client.completions.create(model="tiny-chat", prompt="the quick", max_tokens=4).choices[0].finish_reason
    assert server.engine.cache.allocator.num_free == server.engine.cache.num_blocks  # nothing leaked
