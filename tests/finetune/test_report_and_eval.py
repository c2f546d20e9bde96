"""The evaluate stage asks a tuned model the generated chat tasks through its chat template,
and the report section shows the fine-tuning figures and that table."""
import json

from pipeline.core.tasks import load_task
from pipeline.report.blocks import Context, Table
from pipeline.report.sections import finetune as section
from tests.finetune.helpers import run_finetune


def test_chat_tasks_render_each_question_as_a_user_turn(base_dir):
    from pipeline.core import chat
    from pipeline.core.tasks import build_requests

    task = load_task("chat_arithmetic", limit=2)
    tok = chat.hf_tokenizer(base_dir)
    reqs = build_requests(task, lambda m: chat.render_prompt(tok, m))
    q = task.docs[0]["question"]
    assert reqs[0]["context"] == f"<|bos|><|user|>{q}<|end|><|assistant|>"


def test_evaluate_with_the_chat_template_then_the_report_pairs_it_with_the_model(base_dir, tmp_path):
    from pipeline.stage import execute

    results = tmp_path / "results"
    stats = run_finetune(base_dir, results / "sft" / "k1", train={"steps": 3})
    ev = execute("evaluate", {"tasks": ["chat_arithmetic", "chat_word_order"], "limit": 4, "heldout_docs": 0,
                              "contamination_ngram": 0, "canaries": {"count": 0}, "apply_chat_template": True},
                 {"model": results / "sft" / "k1"}, results / "evaluate_sft" / "k2", input_refs={"model": "sft/k1"})
    assert ev["results"]["chat_arithmetic"]["docs"] == 4
    assert "exact_match" in ev["results"]["chat_arithmetic"]["metrics"]
    points = [{"name": "p", "steps": {"sft": {"stage": "finetune", "key": "k1", "inputs": {}},
                                      "evaluate_sft": {"stage": "evaluate", "key": "k2", "inputs": {}}}}]
    blocks = section.render(Context(points, results, tmp_path / "report", None))
    tables = [b for b in blocks if isinstance(b, Table)]
    assert tables[0].rows[0][1] == "sft" and tables[0].rows[0][2] == stats["trainable_params"]
    assert tables[-1].rows[0][:2] == ["evaluate_sft", "sft/k1"]
