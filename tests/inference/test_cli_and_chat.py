"""The generate command (its usage, errors and output equal to the engine's), chat templates
rendered exactly as transformers' apply_chat_template, and pretraining's samples."""
import shutil
import subprocess
import sys

import pytest
import torch

from pipeline.core.errors import StageError
from pipeline.core.inference import Engine, SamplingParams
from pipeline.core.chat import find_template
from pipeline.core.inference.chat import render_chat
from pipeline.core.inference.cli import generate_main, main
from tests.inference.test_server import TEMPLATE

JINJA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}<|system|>{% elif m['role'] == 'user' %}"
                  "<|user|>{% else %}<|assistant|>{% endif %}{{ m['content'] | trim }}<|end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_generate_prints_the_engines_completion(model_dir, capsys):
    expected = Engine.from_dir(model_dir).generate(["the quick"], SamplingParams(max_tokens=8, temperature=0))[0]
    assert generate_main([f"model={model_dir}", "prompt=the quick", "max_tokens=8", "temperature=0"]) == 0
    assert capsys.readouterr().out == "the quick" + expected.text + "\n"
    assert generate_main([f"model={model_dir}", "prompt=the quick", "max_tokens=8", "temperature=0",
                          "stream=true"]) == 0
    assert capsys.readouterr().out == "the quick" + expected.text + "\n"


def test_generate_batches_several_prompts_with_a_seed_and_stop(model_dir, capsys):
    params = SamplingParams(max_tokens=12, temperature=0.8, top_k=40, top_p=0.95, seed=3, stop=["e"])
    expected = Engine.from_dir(model_dir).generate(["the quick", "yes"], params)
    generate_main([f"model={model_dir}", "prompt=the quick", "prompt=yes", "max_tokens=12", "temperature=0.8",
                   "top_k=40", "top_p=0.95", "seed=3", "stop=e"])
    assert capsys.readouterr().out == f"the quick{expected[0].text}\n\nyes{expected[1].text}\n"


def test_the_command_line_module_runs_and_explains_itself(model_dir, repo):
    run = lambda *a: subprocess.run([sys.executable, "-m", "pipeline", *a], cwd=repo,
                                    capture_output=True, text=True, timeout=120)
    assert "python -m pipeline generate model=DIR" in run("generate", "--help").stdout
    out = run("generate", f"model={model_dir}", "prompt=the quick", "max_tokens=4", "temperature=0")
    assert out.returncode == 0 and out.stdout.startswith("the quick")
    bad = run("generate", f"model={model_dir}", "prompt=x", "temprature=0")
    assert bad.returncode == 1 and "unknown argument 'temprature=0'" in bad.stderr


@pytest.mark.parametrize("argv, message", [
    (["prompt=hi"], "model=DIR is required"),
    (["model={d}"], "prompt"),
    (["model={d}", "prompt=hi", "max_tokens=many"], "max_tokens='many': expected int"),
    (["model={d}", "prompt=hi", "top_p=2"], "top_p"),
    (["model={d}", "prompt=hi", "stream=maybe"], "expected true or false"),
    (["model={d}", "prompt=hi", "chat=true"], "no chat template"),
    (["model={d}", "prompt=" + "fox " * 200], "context is 96 tokens"),
    (["model={d}", "prompt=a", "prompt=b", "stream=true"], "give one prompt"),
    (["model={d}", "prompt=a", "system=be brief"], "add chat=true"),
])
def test_generate_errors_name_the_argument(plain_model_dir, argv, message):
    with pytest.raises(StageError, match=message):
        generate_main([a.format(d=plain_model_dir) for a in argv])
    assert main(["nonsense"]) == 2


def test_chat_rendering_equals_transformers_apply_chat_template(model_dir, tmp_path):
    from transformers import AutoTokenizer

    hf_dir = tmp_path / "hf"
    shutil.copytree(model_dir / "hf", hf_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    tok.chat_template = JINJA_TEMPLATE
    tok.save_pretrained(hf_dir)  # writes chat_template.jinja as fine-tuning would
    messages = [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "Tell me about the fox."},
                {"role": "assistant", "content": "It is quick."}, {"role": "user", "content": "And the dog?"}]
    template = find_template(tmp_path)
    assert template == JINJA_TEMPLATE
    ours = render_chat(template, messages, {"bos": "<|bos|>", "eos": "<|endoftext|>"})
    assert ours == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    engine = Engine.from_dir(model_dir)
    assert engine.encode(ours, special=False) == tok.apply_chat_template(messages, add_generation_prompt=True,
                                                                         return_dict=False)


def test_generate_chat_uses_the_template(model_dir, tmp_path, capsys):
    d = tmp_path / "chat"
    shutil.copytree(model_dir, d)
    (d / "chat_template.jinja").write_text(TEMPLATE)  # found before the export's
    engine = Engine.from_dir(d)
    ids = engine.encode(render_chat(TEMPLATE, [{"role": "user", "content": "hi"}]), special=False)
    expected = engine.generate([ids], SamplingParams(max_tokens=10, temperature=0,
                                                     stop_token_ids=engine.chat_stop_ids))[0]
    generate_main([f"model={d}", "prompt=hi", "chat=true", "max_tokens=10", "temperature=0"])
    assert capsys.readouterr().out == expected.text + "\n"


def test_bad_messages_are_refused():
    with pytest.raises(ValueError, match="non-empty list"):
        render_chat(TEMPLATE, [])
    with pytest.raises(ValueError, match=r"messages\[1\].content"):
        render_chat(TEMPLATE, [{"role": "user", "content": "a"}, {"role": "user", "content": 3}])


def test_pretraining_samples_come_from_the_engine(model_dir):
    from pipeline.core.train.evaluation import samples
    from pipeline.model.io import load_model

    model = load_model(model_dir)
    texts = samples(model, model_dir / "tokenizer.json", ["The", "Once upon a time"], 12, 0.8, 40, 5, 1, "cpu")
    engine = Engine.from_dir(model_dir)
    expected = engine.generate(["The", "Once upon a time"],
                               [SamplingParams(max_tokens=12, temperature=0.8, top_k=40, seed=5 + i) for i in range(2)])
    assert texts == ["The" + expected[0].text, "Once upon a time" + expected[1].text]
    assert texts == samples(model, model_dir / "tokenizer.json", ["The", "Once upon a time"], 12, 0.8, 40, 5, 1, "cpu")
    greedy = samples(model, model_dir / "tokenizer.json", ["The"], 12, 0.0, 0, 5, None, "cpu")[0]
    ids = torch.tensor([engine.encode("The")])
    new = model.generate(ids, 12, temperature=0)[0, ids.shape[1]:].tolist()
    assert greedy == "The" + engine.tokenizer.decode(new, skip_special_tokens=True)


def test_the_serve_command_serves_until_interrupted(model_dir, repo):
    import json
    import signal
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Ctrl-C's SIGINT, not ignored even when the tests run as a background job (which ignores it,
    # and a child inherits that: the server then never stopped)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", f"model={model_dir}",
                             f"port={port}", "name=tiny"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().startswith(f"serving tiny on http://127.0.0.1:{port}/v1")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=30) as r:
            assert json.load(r)["data"][0]["id"] == "tiny"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            proc.kill()  # never left serving after a failure (a no-op once it has exited)
