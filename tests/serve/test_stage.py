"""The serve step: GGUF export, checks through the openai client, throughput, launch file."""
import json
import logging
import shutil

import pytest

from pipeline.core.errors import StageError
from pipeline.serve import Config, run
from tests.inference.conftest import tokenizer_dir, write_model_dir  # noqa: F401 (fixture)
from tests.inference.test_server import TEMPLATE


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, tokenizer_dir):  # noqa: F811
    d = write_model_dir(tmp_path_factory.mktemp("serve") / "tiny", tokenizer_dir)
    (d / "chat_template.jinja").write_text(TEMPLATE)
    return d


def test_serve_step_exports_checks_and_measures(chat_model, tmp_path):
    from gguf import GGUFReader

    out = tmp_path / "out"
    out.mkdir()
    stats = run(Config(clients=4, max_tokens=6, port=8123), {"model": chat_model}, out, logging.getLogger("t"))
    assert len(GGUFReader(str(out / "gguf" / "model.gguf")).tensors) == 2 + 2 * 9
    assert stats["gguf_bytes"] == (out / "gguf" / "model.gguf").stat().st_size and stats["gguf_dtype"] == "f16"
    assert stats["chat_checked"] and stats["completion_tokens"] == 6 and stats["completion"].startswith("Once")
    t = stats["throughput"]
    assert t["clients"] == 4 and t["tokens"] == 24 and t["tokens_per_s"] > 0 and t["first_token_ms_p50"] > 0
    launch = json.loads((out / "serve.json").read_text())
    assert launch["command"] == f"python -m pipeline serve model={chat_model.resolve()} port=8123"
    assert launch["openai_base_url"] == "http://127.0.0.1:8123/v1"
    assert stats["compiled_decode"]  # the default: the server's decode steps ran compiled


def test_a_model_without_a_template_is_served_without_the_chat_check(tmp_path, tokenizer_dir):  # noqa: F811
    d = write_model_dir(tmp_path / "base", tokenizer_dir, chat_tokens=False)
    (tmp_path / "out").mkdir()
    stats = run(Config(clients=2, max_tokens=3, gguf_dtype="q8_0", compile=False), {"model": d}, tmp_path / "out",
                logging.getLogger("t"))
    assert not stats["chat_checked"] and stats["throughput"]["tokens"] == 6 and not stats["compiled_decode"]


@pytest.mark.parametrize("bad, message", [({"gguf_dtype": "q2"}, "serve.gguf_dtype"), ({"clients": 0}, "serve.clients"),
                                          ({"port": 70000}, "serve.port"), ({"prompt": ""}, "serve.prompt")])
def test_bad_settings_name_the_key(bad, message):
    with pytest.raises(StageError, match=message):
        Config(**bad)


def test_the_report_section_shows_each_served_model(chat_model, tmp_path):
    from pipeline.report.sections import serve

    out = tmp_path / "serve" / "abc"
    out.mkdir(parents=True)
    stats = run(Config(clients=2, max_tokens=3, compile=False), {"model": chat_model}, out, logging.getLogger("t"))
    (out / "stats.json").write_text(json.dumps(stats))

    class Ctx:
        def stage_dirs(self, stage):
            return [("serve", out)] if stage == "serve" else []

        def stats(self, d):
            return json.loads((d / "stats.json").read_text())

    blocks = serve.render(Ctx())
    table = blocks[2]
    assert table.rows[0][:5] == ["serve", "tiny", "f16", round(stats["gguf_bytes"] / 2**20, 2), "yes"]
    assert table.rows[0][-1] == "eager"  # this run: compile=False
    assert "python -m pipeline serve model=" in blocks[3].text
