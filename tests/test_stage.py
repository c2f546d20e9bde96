"""The stage contract: keys, atomic publish, accounting."""
import json
import types

import pytest

from pipeline import stage as stage_mod
from pipeline.core.errors import StageError
from pipeline.stage import execute, keyed_subtree, stage_key


def test_key_ignores_knobs_that_do_not_change_results():
    a = {"max_docs_per_source": 5, "workers": 1, "sources": ["builtin"]}
    b = {"max_docs_per_source": 5, "workers": 8, "sources": ["builtin"]}
    assert stage_key("collect", a, {}) == stage_key("collect", b, {})
    assert keyed_subtree(a) == {"max_docs_per_source": 5, "sources": ["builtin"]}


def test_key_changes_with_config_upstream_and_version(monkeypatch):
    base = stage_key("collect", {"x": 1}, {})
    assert stage_key("collect", {"x": 2}, {}) != base
    assert stage_key("collect", {"x": 1}, {"up": "abc"}) != base
    module = stage_mod.stage_module("collect")
    monkeypatch.setattr(module, "VERSION", module.VERSION + "-changed")
    assert stage_key("collect", {"x": 1}, {}) != base


def _fake_stage(monkeypatch, run):
    module = types.SimpleNamespace(Config=dict, INPUTS=[], VERSION="1", run=run, __doc__="fake")
    monkeypatch.setitem(stage_mod.STAGES, "fake", "fake_module")
    monkeypatch.setattr(stage_mod.importlib, "import_module",
                        lambda name, _real=stage_mod.importlib.import_module: module if name == "fake_module" else _real(name))


def test_failed_stage_leaves_nothing_that_looks_finished(tmp_path, monkeypatch):
    def run(cfg, inputs, out, log):
        (out / "half-written.parquet").write_text("x")
        log.info("about to fail")
        raise KeyboardInterrupt  # a kill, not only an exception

    _fake_stage(monkeypatch, run)
    out = tmp_path / "fake" / "abc"
    with pytest.raises(KeyboardInterrupt):
        execute("fake", {}, {}, out, "abc")
    assert not out.exists()
    assert [p.name for p in (tmp_path / "fake").iterdir()] == ["abc.failed.log"]
    assert "about to fail" in (tmp_path / "fake" / "abc.failed.log").read_text()


def test_successful_stage_writes_config_stats_log(tmp_path, monkeypatch):
    _fake_stage(monkeypatch, lambda cfg, inputs, out, log: {"docs_in": 3, "docs_kept": 2, "dropped": {"empty": 1}})
    out = tmp_path / "fake" / "k"
    stats = execute("fake", {"a": 1}, {}, out, "k")
    assert stats["docs_kept"] == 2
    assert {p.name for p in out.iterdir()} == {"config.yaml", "stats.json", "log.txt"}
    assert json.loads((out / "stats.json").read_text())["dropped"] == {"empty": 1}
    assert "a: 1" in (out / "config.yaml").read_text()


def test_broken_accounting_is_an_error(tmp_path, monkeypatch):
    _fake_stage(monkeypatch, lambda cfg, inputs, out, log: {"docs_in": 3, "docs_kept": 1, "dropped": {"empty": 1}})
    with pytest.raises(StageError, match="accounting broken: 3 in != 1 kept"):
        execute("fake", {}, {}, tmp_path / "fake" / "k", "k")
    assert not (tmp_path / "fake" / "k").exists()


def test_missing_input_names_the_stage_to_run(tmp_path, monkeypatch):
    _fake_stage(monkeypatch, lambda cfg, inputs, out, log: {})
    with pytest.raises(StageError, match="--until collect"):
        execute("fake", {}, {"collect": tmp_path / "nope"}, tmp_path / "fake" / "k", "k")


def test_temp_dir_of_a_killed_run_is_cleaned_up(tmp_path, monkeypatch):
    _fake_stage(monkeypatch, lambda cfg, inputs, out, log: {})
    stale = tmp_path / "fake" / ".tmp-k-999999999"
    stale.mkdir(parents=True)
    (stale / "partial.bin").write_bytes(b"x")
    execute("fake", {}, {}, tmp_path / "fake" / "k", "k")
    assert not stale.exists()
    assert (tmp_path / "fake" / "k" / "stats.json").is_file()
