"""Structured config: unknown keys and wrong types fail before any work, naming the key."""
import pytest

from pipeline.config import compose, normalize_overrides
from pipeline.core.errors import StageError
from pipeline.core.dag import build_steps


def test_defaults_compose_and_every_step_has_a_key():
    steps = build_steps(compose([]))
    assert [s.name for s in steps][:2] == ["collect", "filter"]
    assert all(len(s.key) == 12 for s in steps)


def test_unknown_key_names_the_key():
    with pytest.raises(StageError) as err:
        compose(["collect.max_doc_bytez=3"])
    assert "collect.max_doc_bytez" in str(err.value)


def test_wrong_type_names_the_key():
    with pytest.raises(StageError, match="collect.max_docs_per_source"):
        compose(["collect.max_docs_per_source=many"])


def test_unknown_stage_group_names_it():
    with pytest.raises(StageError, match="colect"):
        compose(["colect.sources=[x]"])


def test_unknown_key_in_a_config_file_names_the_file(tmp_path, monkeypatch):
    import shutil

    import pipeline.config as config

    conf = tmp_path / "conf"
    shutil.copytree(config.CONF_DIR, conf)
    (conf / "experiment" / "broken.yaml").write_text("# @package _global_\ncollect:\n  shard_dox: 3\n")
    monkeypatch.setattr(config, "CONF_DIR", conf)
    with pytest.raises(StageError) as err:
        compose(["experiment=broken"])
    assert "experiment/broken" in str(err.value) and "shard_dox" in str(err.value)


def test_experiment_changes_only_what_it_sets():
    ci = compose(["experiment=ci"])
    assert ci.collect.max_docs_per_source > 0
    assert compose([]).collect.max_docs_per_source == 0


def test_stage_relative_overrides():
    assert normalize_overrides(["max_docs_per_source=3", "seed=1", "collect.shard_docs=2"], "collect") == [
        "collect.max_docs_per_source=3", "seed=1", "collect.shard_docs=2"]


def test_a_stage_own_train_group_takes_train_overrides():
    """`python -m pipeline finetune train.steps=9` sets finetune's own training config; the root
    `train` group is pretraining's (its DAG entry reads ${train}), so there it stays."""
    from pipeline.config import normalize_overrides

    assert normalize_overrides(["train.steps=9", "model.n_layer=2"], "finetune") == [
        "finetune.train.steps=9", "model.n_layer=2"]
    assert normalize_overrides(["train.steps=9", "compile=false"], "compress")[0] == "compress.train.steps=9"
    assert normalize_overrides(["train.steps=9", "model.n_layer=2"], "pretrain") == ["train.steps=9", "model.n_layer=2"]
