"""Model presets as a top-level Hydra group: interpolated vocabulary, typed keys, sizes."""
import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipeline.config import CONF_DIR, compose
from pipeline.model import Config, build, describe, main
from pipeline.core.errors import StageError

PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))


def test_every_preset_composes_and_follows_the_size_rules():
    assert {"cpu_2m", "cpu_10m", "gpt2_124m", "llama_1b", "ci_tiny"} <= set(PRESETS)
    for name in PRESETS:
        m = compose([f"model={name}"]).model
        cfg = Config(**OmegaConf.to_container(m, resolve=True)).validate()
        assert cfg.d_model % 128 == 0 and cfg.d_mlp % 128 == 0, name
        assert cfg.vocab_size == compose([]).tokenize.vocab_size  # interpolated, not copied


def test_vocab_size_follows_the_tokenizer():
    cfg = compose(["tokenize.vocab_size=8192"])
    assert cfg.model.vocab_size == 8192
    assert compose(["experiment=ci"]).model.vocab_size == 512


def test_the_ci_experiment_picks_the_tiny_model():
    m = compose(["experiment=ci"]).model
    assert (m.n_layer, m.d_model) == (2, 128)


def test_the_cpu_default_is_a_few_million_parameters():
    cfg = Config(**OmegaConf.to_container(compose([]).model, resolve=True))
    assert 1_000_000 < describe(cfg)["params"] < 5_000_000


def test_a_wrong_model_key_fails_at_composition_naming_it():
    with pytest.raises(StageError, match="n_layers"):
        compose(["model.n_layers=3"])
    with pytest.raises(StageError, match="d_model"):
        compose(["model.d_model=wide"])


def test_a_stage_can_carry_the_model_as_a_typed_interpolated_field():
    """How a stage puts the model in its key: a ``Config``-typed field whose schema default is
    ``${model}``. Merging YAML ``model: ${model}`` into it is then accepted, overrides of single
    keys still work, and a misspelt key is still refused (the field keeps its type)."""

    @dataclasses.dataclass
    class StageCfg:
        model: Config = "${model}"  # type: ignore[assignment]
        steps: int = 10

    @dataclasses.dataclass
    class Root:
        model: Config = dataclasses.field(default_factory=Config)
        stage: StageCfg = dataclasses.field(default_factory=StageCfg)

    preset = OmegaConf.load(Path(CONF_DIR) / "model" / "cpu_10m.yaml")
    preset.vocab_size = 777
    cfg = OmegaConf.merge(OmegaConf.structured(Root), {"model": preset}, {"stage": {"model": "${model}"}})
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["stage"]["model"] == resolved["model"] and resolved["stage"]["model"]["n_layer"] == 12
    built = build(cfg.stage.model)
    assert built.cfg.vocab_size == 777
    with pytest.raises(Exception, match="n_layers"):
        OmegaConf.merge(cfg, OmegaConf.from_dotlist(["stage.model.n_layers=3"]))


def test_steps_that_build_a_model_see_the_composed_preset():
    from pipeline.core.dag import build_steps

    cfg = compose(["model=cpu_10m", "tokenize.vocab_size=1024"])
    carriers = [s for s in build_steps(cfg) if s.stage == "pretrain"]
    assert carriers
    for step in carriers:
        assert step.config["model"] == OmegaConf.to_container(cfg.model, resolve=True)
        assert step.config["model"]["vocab_size"] == 1024


def test_the_preset_table_prints_computed_sizes(capsys):
    assert main(["model=cpu_2m"]) == 0
    out = capsys.readouterr().out
    params = describe(Config(**OmegaConf.to_container(compose([]).model, resolve=True)))["params"]
    assert f"{params:,}" in out and "cpu_2m" in out
