"""The DAG as step values: one stage used several times, fan-out, variants, globs, and the
errors a wrong DAG gets before any work."""
import json

import pytest
from omegaconf import OmegaConf, open_dict

from pipeline.config import compose
from pipeline.core.dag import build_steps
from pipeline.core.errors import StageError
from pipeline.core.plan import step_dir, write_plan
from pipeline.runner import run_plan


def with_dag(extra: dict, base: list[str] = ("experiment=ci",), drop=()):
    cfg = compose(list(base))
    with open_dict(cfg):
        for name in drop:
            del cfg.dag[name]
        cfg.dag = OmegaConf.merge(cfg.dag, extra)
    return cfg


def names(steps):
    return [s.name for s in steps]


def test_the_default_dag_reads_in_order():
    steps = build_steps(compose([]))
    assert names(steps) == ["collect", "filter", "dedup", "scrub", "tokenize", "pretrain",
                            "sft", "lora", "dpo", "reward", "rl", "safety", "evaluate_chat_pretrain", "evaluate_chat_sft",
                            "evaluate_chat_lora", "evaluate_chat_dpo", "evaluate_chat_rl",
                            "compress_int8", "compress_gptq4", "compress_wanda", "compress_distill",
                            "evaluate_pretrain", "evaluate_compress_int8", "evaluate_compress_gptq4",
                            "evaluate_compress_wanda", "evaluate_compress_distill", "serve"]
    by = {s.name: s for s in steps}
    assert by["evaluate_pretrain"].inputs == {"model": by["pretrain"], "tokens": by["tokenize"]}
    assert by["evaluate_compress_gptq4"].inputs["model"] is by["compress_gptq4"]
    assert by["compress_gptq4"].typed.methods == ["gptq"] and by["compress_int8"].typed.methods == ["int8"]


def test_one_stage_used_twice_with_different_inputs_and_configs_runs_each(tmp_path):
    docs = tmp_path / "docs.jsonl"
    sentence = "The cat and the dog walked to the park with their owner. "
    rows = [{"id": f"d{i}", "text": f"Story {i}. " + sentence * (1 + 9 * (i % 2))} for i in range(8)]
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = with_dag({
        "filter_loose": {"stage": "filter", "inputs": {"docs": "collect"},
                         "config": {"gopher_quality": {"min_doc_words": 1}}},
        "dedup_loose": {"stage": "dedup", "inputs": {"docs": "filter_loose"}},
    }, base=["experiment=ci", f"collect.sources=[{docs}]", "collect.canaries.count=0",
             f"results_dir={tmp_path / 'results'}", "filter.language.enabled=false",
             "filter.gopher_repetition.enabled=false", "filter.c4.enabled=false", "filter.fineweb.enabled=false"])
    steps = {s.name: s for s in build_steps(cfg)}
    strict, loose = steps["filter"], steps["filter_loose"]
    assert strict.stage == loose.stage == "filter" and strict.key != loose.key
    assert steps["dedup_loose"].inputs["docs"] is loose and steps["dedup"].inputs["docs"] is strict
    results = tmp_path / "results"
    for name in ("collect", "filter", "filter_loose", "dedup_loose"):
        run_plan(write_plan(steps[name], results))
    kept = {n: json.loads((step_dir(results, n, steps[n].key) / "stats.json").read_text())["docs_kept"]
            for n in ("filter", "filter_loose")}
    assert kept == {"filter_loose": 8, "filter": 4}  # the 4 short documents fail min_doc_words=50
    d = json.loads((step_dir(results, "dedup_loose", steps["dedup_loose"].key) / "stats.json").read_text())
    assert d["inputs"] == {"docs": f"filter_loose/{loose.key}"} and d["docs_in"] == 8 and d["step"] == "dedup_loose"


def test_fan_out_variants_and_globs_name_each_step():
    cfg = with_dag({
        "shrink": {"stage": "filter", "inputs": {"docs": "collect"},
                   "variants": {"short": {"gopher_quality": {"min_doc_words": 10}},
                                "long": {"gopher_quality": {"min_doc_words": 100}}}},
        "evaluate": {"inputs": {"model": ["pretrain"]}},
        "scrub": {"inputs": {"docs": ["dedup", "shrink_*"]}},
        "tokenize": {"inputs": {"docs": "scrub_dedup"}},
    })
    steps = {s.name: s for s in build_steps(cfg)}
    assert {"shrink_short", "shrink_long", "scrub_dedup", "scrub_shrink_short", "scrub_shrink_long",
            "evaluate_pretrain"} <= set(steps)
    assert "scrub" not in steps and "evaluate" not in steps
    assert steps["shrink_short"].typed.gopher_quality.min_doc_words == 10
    assert steps["scrub_shrink_long"].inputs["docs"] is steps["shrink_long"]
    # tokenize still reads `scrub`, which fanned out: a plain name that no longer exists is an error
    with pytest.raises(StageError, match="dag.tokenize.inputs: no step named 'scrub'"):
        build_steps(with_dag({"scrub": {"inputs": {"docs": ["dedup"]}}}))


def test_a_disabled_branch_takes_its_glob_dependents_and_names_its_plain_ones():
    with pytest.raises(StageError, match="dag.rl.inputs: step 'reward' is disabled"):
        build_steps(with_dag({"reward": {"enabled": False}}))
    steps = names(build_steps(with_dag({"lora": {"enabled": False},
                                        "evaluate_chat": {"inputs": {"model": ["pretrain", "lora*"]}}})))
    assert "lora" not in steps and "evaluate_chat_lora" not in steps and "evaluate_chat_pretrain" in steps


def test_a_glob_that_matches_nothing_makes_no_step():
    cfg = with_dag({"evaluate": {"inputs": {"model": ["nothing_*"], "tokens": "tokenize"}}})
    assert not [n for n in names(build_steps(cfg)) if n.startswith("evaluate_") and "chat" not in n]


@pytest.mark.parametrize("extra, message", [
    ({"filter": {"inputs": {"documents": "collect"}}}, r"dag.filter.inputs: stage 'filter' has no input \['documents'\]"),
    ({"extra": {"stage": "filter"}}, r"dag.extra.inputs: stage 'filter' needs \['docs'\] \(docs: document shards"),
    ({"extra": {"stage": "filtr", "inputs": {}}}, r"dag.extra.stage: unknown stage 'filtr'"),
    ({"filter": {"config": {"workerz": 2}}}, r"dag.filter: config of stage 'filter'.*workerz.*Did you mean 'workers'"),
    ({"scrub": {"config": {"replacement": "nothing"}}}, r"dag.scrub: scrub.replacement: 'nothing'"),
    ({"filter": {"inputs": {"docs": "scrub"}}}, r"cycle"),
    ({"evaluate": {"inputs": {"model": "compress_*"}}}, r"a glob makes one step per match"),
])
def test_a_wrong_dag_is_an_error_naming_the_entry(extra, message):
    with pytest.raises(StageError, match=message):
        build_steps(with_dag(extra))
