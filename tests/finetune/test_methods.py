"""Every method runs end to end at test size and writes a model directory with its figures."""
import json

import pytest
import torch

from pipeline.model.io import is_model_dir, load_model
from tests.finetune.helpers import run_finetune


def test_sft_writes_a_chat_model_with_before_and_after_scores(base_dir, tmp_path):
    stats = run_finetune(base_dir, tmp_path / "sft")
    out = tmp_path / "sft"
    assert is_model_dir(out) and (out / "chat_template.jinja").is_file() and (out / "hf" / "config.json").is_file()
    assert stats["method"] == "sft" and stats["trainable_params"] == stats["params"]
    assert set(stats["heldout_exact_match"]["after"]) == {"arithmetic", "reverse", "uppercase", "word_order", "passage_qa"}
    assert stats["examples_in"] == stats["examples_kept"] + sum(stats["dropped"].values())
    assert stats["final_train_loss"] is not None and "val_loss" in stats["final_validation"]
    load_model(out)


def test_lora_trains_only_adapters_and_writes_merged_weights_and_the_adapter(base_dir, tmp_path):
    stats = run_finetune(base_dir, tmp_path / "lora", method="lora", lora={"rank": 4, "alpha": 8.0})
    out = tmp_path / "lora"
    assert 0 < stats["trainable_params"] < stats["params"] / 5
    assert stats["optimizer_state_bytes"] == 8 * stats["trainable_params"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and is_model_dir(out)
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and set(config["target_modules"]) >= {"q_proj", "down_proj"}


def test_a_lora_step_run_twice_trains_the_same_adapter(base_dir, tmp_path):
    from safetensors.torch import load_file

    for name in ("a", "b"):
        run_finetune(base_dir, tmp_path / name, method="lora", lora={"rank": 4, "alpha": 8.0})
    a, b = (load_file(tmp_path / n / "adapter" / "adapter_model.safetensors") for n in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dpo_reports_reward_accuracy_margins_and_preference_accuracy(base_dir, tmp_path):
    stats = run_finetune(base_dir, tmp_path / "dpo", method="dpo", dpo={"beta": 0.5})
    assert {"before", "after"} == set(stats["heldout_preference_accuracy"])
    by_task = stats["heldout_preference_accuracy_by_task"]  # the overall figure, split by task
    assert sum(t["pairs"] for t in by_task.values()) == stats["heldout_pairs"] and len(by_task) > 1
    for when in ("before", "after"):
        weighted = sum(t["pairs"] * t[when] for t in by_task.values() if t["pairs"]) / stats["heldout_pairs"]
        assert weighted == pytest.approx(stats["heldout_preference_accuracy"][when])
    from pipeline.report.sections.finetune import _pref  # the report's per-task table shows it

    task, t = next((k, v) for k, v in by_task.items() if v["pairs"])
    assert _pref(stats, task) == f"{t['before']:.2f} -> {t['after']:.2f}"
    assert 0 <= stats["heldout_reward_accuracy"] <= 1 and "heldout_reward_margin" in stats
    assert "train_reward_accuracy" in stats and "val_rewards_accuracies" in stats["final_validation"]
    own = stats["heldout_own_mistakes"]  # the base's own wrong replies as the rejected ones
    assert 0 < own["pairs"] <= stats["heldout_pairs"] and 0 <= own["before"] <= 1 and 0 <= own["after"] <= 1
    assert "policy_rejected" not in stats  # dpo.rejected=given: the data's pairs
    from pipeline.report.sections.finetune import _row

    assert f"{own['before']:.3f} -> {own['after']:.3f} ({own['pairs']} pairs)" in _row("dpo", None, stats)


def test_dpo_on_the_models_own_mistakes(base_dir, tmp_path):
    stats = run_finetune(base_dir, tmp_path / "dpo", method="dpo", dpo={"rejected": "policy"})
    assert 0 < stats["policy_rejected"] <= stats["train_examples"]  # the test base answers (nearly) all wrong


def test_own_mistakes_replaces_the_rejected_reply_wherever_the_model_is_wrong():
    from pipeline.finetune import replies

    pairs = [{"prompt": [{"role": "user", "content": q}], "chosen": " 7", "rejected": " 8"} for q in "abc"]
    out, wrong = replies.own_mistakes(pairs, [" 7 ", "  ", " 6"])  # right, empty, wrong
    assert wrong == [False, True, True] and [p["rejected"] for p in out] == [" 8", "  ", " 6"]
    assert pairs[2]["rejected"] == " 8"  # the input pairs are left as they were


def test_reward_model_then_rl_against_it(base_dir, tmp_path):
    stats = run_finetune(base_dir, tmp_path / "rm", method="reward")
    assert 0 <= stats["heldout_accuracy"] <= 1 and (tmp_path / "rm" / "reward_head.safetensors").is_file()
    rl = run_finetune(base_dir, tmp_path / "rl", method="rl", inputs={"reward": tmp_path / "rm"},
                      rl={"reward": "model", "group_size": 2, "max_new_tokens": 4}, train={"batch_size": 2, "steps": 2})
    assert len(rl["reward_curve"]) == 2 and is_model_dir(tmp_path / "rl")


def test_rl_on_the_tasks_answers_logs_a_reward_curve(base_dir, tmp_path):
    stats = run_finetune(base_dir, tmp_path / "rl", method="rl", rl={"group_size": 4, "max_new_tokens": 6},
                         train={"batch_size": 2, "steps": 3})
    assert [s for s, _ in stats["reward_curve"]] == [1, 2, 3]
    assert all(0 <= r <= 1 for _, r in stats["reward_curve"])
    assert "heldout_exact_match" in stats


def test_safety_mix_and_context_distillation_report_refusal_rates(base_dir, tmp_path):
    from pipeline.core.tasks import safety

    mixed = run_finetune(base_dir, tmp_path / "mix", safety={"mix": 0.3}, tasks=["arithmetic"])
    assert mixed["safety_examples"] == round(0.3 / 0.7 * 200)  # 30% of all SFT examples: 200 task + 86 safety
    rates = mixed["refusal_rate"]
    assert set(rates) == {"before", "after"} and set(rates["after"]) == {"harmful", "harmless"}
    distilled = run_finetune(base_dir, tmp_path / "distill", safety={"mix": 0.3, "context_distillation": True},
                             tasks=["arithmetic"])
    assert "refusal_rate" in distilled and distilled["safety_examples"] <= mixed["safety_examples"]
    assert safety.is_refusal(safety.REFUSAL) and not safety.is_refusal("Run kill with the process id.")


def test_dpo_with_the_safety_mix_learns_safety_preferences_and_scores_the_heldout_ones(base_dir, tmp_path):
    from pipeline.core.tasks import safety

    stats = run_finetune(base_dir, tmp_path / "dpo", method="dpo", safety={"mix": 0.3}, tasks=["arithmetic"])
    assert stats["safety_examples"] == round(0.3 / 0.7 * 200)  # safety pairs beside 200 task pairs
    assert stats["train_examples"] == 200 + stats["safety_examples"]
    by_task = stats["heldout_preference_accuracy_by_task"]
    test = safety.preference_pairs("test")
    assert by_task["safety_harmful"]["pairs"] == sum(p["kind"] == "harmful" for p in test) > 0
    assert by_task["safety_harmless"]["pairs"] == sum(p["kind"] == "harmless" for p in test) > 0
    assert set(stats["refusal_rate"]["after"]) == {"harmful", "harmless"}
    train = {p["prompt"][0]["content"] for p in safety.preference_pairs("train")}
    assert train and not train & {p["prompt"][0]["content"] for p in test}  # held-out requests are new
    for p in test:  # refuse the harmful, answer the look-alike
        assert safety.is_refusal(p["chosen"]) == (p["kind"] == "harmful") != safety.is_refusal(p["rejected"])
    from pipeline.report.sections.finetune import render  # the report's per-task table lists them

    class Ctx:
        def stage_dirs(self, stage):
            return [("dpo", tmp_path / "dpo")] if stage == "finetune" else []

        def stats(self, d):
            return stats

    tables = [b for b in render(Ctx()) if getattr(b, "rows", None) and len(b.rows[0]) == 5]
    harmful = by_task["safety_harmful"]
    assert ["dpo", "safety_harmful", None, None, f"{harmful['before']:.2f} -> {harmful['after']:.2f}"] in tables[0].rows


def test_safety_settings_that_would_change_nothing_are_refused(base_dir, tmp_path):
    from pipeline.core.errors import StageError

    with pytest.raises(StageError, match="method=rl trains on neither"):
        run_finetune(base_dir, tmp_path / "a", method="rl", safety={"mix": 0.2})
    with pytest.raises(StageError, match="context_distillation .* needs safety.mix > 0"):
        run_finetune(base_dir, tmp_path / "b", safety={"context_distillation": True})
    with pytest.raises(StageError, match="context_distillation"):
        run_finetune(base_dir, tmp_path / "c", method="dpo", safety={"mix": 0.2, "context_distillation": True})


def test_group_advantages_are_scaled_by_the_groups_std_or_only_centred():
    import torch

    from pipeline.finetune.rl import advantages

    r = torch.tensor([1.0, 0.0, 0.0, 0.0])
    scaled, centred = advantages(r, "group"), advantages(r, "none")
    assert torch.allclose(centred, r - 0.25) and torch.allclose(scaled, (r - 0.25) / (r.std() + 1e-4))
    assert scaled.std() == pytest.approx(1.0, abs=1e-3) and scaled.sum() == pytest.approx(0.0, abs=1e-6)
    assert torch.equal(advantages(torch.ones(4), "group"), torch.zeros(4))  # nothing to prefer: no push


def test_rl_settings_are_checked_before_any_work(base_dir, tmp_path):
    from pipeline.core.errors import StageError

    with pytest.raises(StageError, match=r"rl.scale_rewards must be group\|none"):
        run_finetune(base_dir, tmp_path / "a", method="rl", rl={"scale_rewards": "batch"})
    with pytest.raises(StageError, match="rl.temperature must be > 0"):
        run_finetune(base_dir, tmp_path / "b", method="rl", rl={"temperature": 0.0})


def test_trainable_tokens_chooses_the_embedding_rows_an_adapter_trains_beside_it(base_dir, tmp_path):
    from pipeline.core import chat
    from pipeline.core.errors import StageError
    from pipeline.finetune.models import chat_token_ids

    width, n_chat = 64, len(chat_token_ids(chat.hf_tokenizer(base_dir)))
    runs = {k: run_finetune(base_dir, tmp_path / k, method="lora", trainable_tokens=k, train={"steps": 1})
            for k in ("none", "chat", "data")}
    assert runs["none"]["trained_token_rows"] == 0 and not (tmp_path / "none" / "adapter" / "token_rows.safetensors").exists()
    assert runs["chat"]["trained_token_rows"] == n_chat < runs["data"]["trained_token_rows"]
    for k in ("chat", "data"):
        assert runs[k]["trainable_params"] == runs["none"]["trainable_params"] + runs[k]["trained_token_rows"] * width
    with pytest.raises(StageError, match=r"trainable_tokens must be chat\|data\|none"):
        run_finetune(base_dir, tmp_path / "bad", method="lora", trainable_tokens="all")
