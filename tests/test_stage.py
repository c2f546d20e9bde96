"""The stage contract: keys, atomic publish, accounting."""
import json
import types
from dataclasses import dataclass

import pytest

from pipeline import stage as stage_mod
from pipeline.core.errors import StageError
from pipeline.core.step import Step, key_of, keyed_values, unkeyed
from pipeline.stage import execute


@dataclass
class Inner:
    size: int = 3
    threads: int = unkeyed(0)


@dataclass
class Knobs:
    n: int = 5
    workers: int = unkeyed(1)
    inner: Inner = None


def test_key_leaves_out_unkeyed_fields_at_any_depth():
    a = Knobs(n=5, workers=1, inner=Inner(3, 0))
    b = Knobs(n=5, workers=8, inner=Inner(3, 4))
    assert keyed_values(a) == keyed_values(b) == {"n": 5, "inner": {"size": 3}}
    assert key_of("s", "1", a, {}) == key_of("s", "1", b, {})


def test_key_changes_with_config_inputs_and_version():
    base = key_of("s", "1", Knobs(inner=Inner()), {"docs": "abc"})
    assert key_of("s", "1", Knobs(n=6, inner=Inner()), {"docs": "abc"}) != base
    assert key_of("s", "1", Knobs(inner=Inner(size=4)), {"docs": "abc"}) != base
    assert key_of("s", "1", Knobs(inner=Inner()), {"docs": "abd"}) != base
    assert key_of("s", "1", Knobs(inner=Inner()), {"other_role": "abc"}) != base
    assert key_of("s", "2", Knobs(inner=Inner()), {"docs": "abc"}) != base
    assert key_of("t", "1", Knobs(inner=Inner()), {"docs": "abc"}) != base


def test_a_step_key_follows_its_stage_version(monkeypatch):
    collect = Step("collect", "collect", {"max_docs_per_source": 3})
    before = collect.key
    monkeypatch.setattr(collect.module, "VERSION", collect.module.VERSION + "-changed")
    assert Step("collect", "collect", {"max_docs_per_source": 3}).key != before


def _fake_stage(monkeypatch, run):
    module = types.SimpleNamespace(Config=dict, INPUTS={}, VERSION="1", run=run, __doc__="fake")
    real = stage_mod.stage_module
    monkeypatch.setattr(stage_mod, "stage_module", lambda name: module if name == "fake" else real(name))


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
    stats = execute("fake", {"a": 1}, {}, out, "k", step="fake_b", input_refs={"docs": "up/123"},
                    extra_log=tmp_path / "logs" / "k.log")
    assert stats["docs_kept"] == 2 and stats["step"] == "fake_b" and stats["inputs"] == {"docs": "up/123"}
    assert {p.name for p in out.iterdir()} == {"config.yaml", "stats.json", "log.txt"}
    assert json.loads((out / "stats.json").read_text())["dropped"] == {"empty": 1}
    assert "a: 1" in (out / "config.yaml").read_text()
    assert "done in" in (tmp_path / "logs" / "k.log").read_text()  # Snakemake's log: file too


def test_broken_accounting_is_an_error(tmp_path, monkeypatch):
    _fake_stage(monkeypatch, lambda cfg, inputs, out, log: {"docs_in": 3, "docs_kept": 1, "dropped": {"empty": 1}})
    with pytest.raises(StageError, match="accounting broken: 3 in != 1 kept"):
        execute("fake", {}, {}, tmp_path / "fake" / "k", "k")
    assert not (tmp_path / "fake" / "k").exists()


def test_missing_input_is_named(tmp_path, monkeypatch):
    _fake_stage(monkeypatch, lambda cfg, inputs, out, log: {})
    with pytest.raises(StageError, match="input 'docs' at .*nope does not exist"):
        execute("fake", {}, {"docs": tmp_path / "nope"}, tmp_path / "fake" / "k", "k")


def test_temp_dir_of_a_killed_run_is_cleaned_up(tmp_path, monkeypatch):
    _fake_stage(monkeypatch, lambda cfg, inputs, out, log: {})
    stale = tmp_path / "fake" / ".tmp-k-999999999"
    stale.mkdir(parents=True)
    (stale / "partial.bin").write_bytes(b"x")
    execute("fake", {}, {}, tmp_path / "fake" / "k", "k")
    assert not stale.exists()
    assert (tmp_path / "fake" / "k" / "stats.json").is_file()


def test_unknown_stage_lists_the_stages():
    with pytest.raises(StageError, match="unknown stage 'colect'.*collect"):
        stage_mod.stage_module("colect")


def test_a_step_must_read_every_document_its_input_kept(tmp_path, monkeypatch):
    up = tmp_path / "up"
    up.mkdir()
    (up / "stats.json").write_text(json.dumps({"docs_in": 5, "docs_kept": 4, "dropped": {"x": 1}}))
    _fake_stage(monkeypatch, lambda cfg, inputs, out, log: {"docs_in": 3, "docs_kept": 3, "dropped": {}})
    with pytest.raises(StageError, match="read 3 documents, but its input .*up kept 4"):
        execute("fake", {}, {"docs": up}, tmp_path / "fake" / "k", "k")
    _fake_stage(monkeypatch, lambda cfg, inputs, out, log: {"docs_in": 4, "docs_kept": 4, "dropped": {}})
    assert execute("fake", {}, {"docs": up}, tmp_path / "fake" / "k", "k")["docs_in"] == 4
