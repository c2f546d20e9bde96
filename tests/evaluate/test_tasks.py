"""Task files: lm-eval's prompt rules, few-shot sampling, and errors that name the file."""
import random

import pytest

from pipeline.core.tasks import build_requests, load_task
from pipeline.core.errors import StageError



def test_multiple_choice_requests_follow_lm_eval(mc_task, mc_rows):
    MC_ROWS = mc_rows
    task = load_task(str(mc_task))
    reqs = build_requests(task)
    assert len(reqs) == len(MC_ROWS)
    # context = doc_to_text; continuation = target_delimiter + choice
    assert reqs[0]["pairs"][1] == ("Question: Which is best for the roof?\nAnswer:", " a lazy dog sleeping here")
    assert task.doc_to_target(MC_ROWS[3]) == 3


def test_fewshot_from_the_test_split_never_shows_the_question_itself(mc_task, mc_rows):
    MC_ROWS = mc_rows
    task = load_task(str(mc_task), num_fewshot=3)
    for r in build_requests(task):
        ctx = r["pairs"][0][0]
        own = f"Question: {r['doc']['question']}\nAnswer:"
        assert ctx.endswith(own) and ctx.count(own) == 1
        assert ctx.count("\n\n") == 3  # three examples, each closed by the few-shot delimiter
    # the sampler is lm-eval's: Random(1234).sample(pool, n + 1), the evaluated doc removed
    rnd = random.Random(1234)
    first = [x for x in rnd.sample(MC_ROWS, 4) if x != MC_ROWS[0]][:3]
    ctx0 = build_requests(task)[0]["pairs"][0][0]
    assert ctx0.startswith(f"Question: {first[0]['question']}\nAnswer: {first[0]['choices'][first[0]['label']]}\n\n")


def test_first_n_sampler_and_description(tmp_path, mc_rows, jsonl):
    MC_ROWS = mc_rows
    jsonl(tmp_path / "d.jsonl", MC_ROWS)
    (tmp_path / "t.yaml").write_text(
        "task: t\ndataset_kwargs:\n  data_files:\n    test: d.jsonl\n    dev: d.jsonl\noutput_type: multiple_choice\n"
        "test_split: test\nfewshot_split: dev\nfewshot_config:\n  sampler: first_n\nnum_fewshot: 1\n"
        'description: "About {{question}}\\n\\n"\ndoc_to_text: question\ndoc_to_choice: choices\ndoc_to_target: label\n')
    ctx = build_requests(load_task(str(tmp_path / "t.yaml")))[2]["pairs"][0][0]
    q0 = MC_ROWS[0]
    assert ctx == f"About {MC_ROWS[2]['question']}\n\n{q0['question']} {q0['choices'][0]}\n\n{MC_ROWS[2]['question']}"


def test_limit_keeps_the_first_documents(mc_task, mc_rows):
    MC_ROWS = mc_rows
    assert [d["question"] for d in load_task(str(mc_task), limit=2).docs] == [r["question"] for r in MC_ROWS[:2]]


@pytest.mark.parametrize("yaml_text, message", [
    ("task: x\nbogus_key: 1\n", "unknown key(s) ['bogus_key']"),
    ("task: x\nprocess_docs: !function utils.process_docs\n", "!function utils.process_docs"),
    ("task: x\ndataset_path: Rowan/hellaswag\n", "dataset_path 'Rowan/hellaswag'"),
    ("task: x\ndataset_kwargs: {data_files: {test: missing.jsonl}}\ntest_split: test\noutput_type: multiple_choice\n", "missing.jsonl does not exist"),
])
def test_bad_task_files_name_the_problem(tmp_path, yaml_text, message):
    (tmp_path / "x.yaml").write_text(yaml_text)
    with pytest.raises(StageError) as err:
        load_task(str(tmp_path / "x.yaml"))
    assert message in str(err.value)


def test_bad_json_line_names_file_and_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n{"a": \n')
    (tmp_path / "t.yaml").write_text("task: t\ndataset_kwargs: {data_files: {test: d.jsonl}}\ntest_split: test\n")
    with pytest.raises(StageError, match=r"d\.jsonl:2: not valid JSON"):
        load_task(str(tmp_path / "t.yaml"))


def test_template_error_names_the_fields(tmp_path, jsonl):
    jsonl(tmp_path / "d.jsonl", [{"question": "q", "label": 0}])
    (tmp_path / "t.yaml").write_text("task: t\ndataset_kwargs: {data_files: {test: d.jsonl}}\ntest_split: test\n"
                                     'output_type: multiple_choice\ndoc_to_text: "{{questoin}}"\ndoc_to_choice: ["a", "b"]\ndoc_to_target: label\n')
    with pytest.raises(StageError, match=r"cannot render .*\['label', 'question'\]"):
        load_task(str(tmp_path / "t.yaml"))


def test_unknown_task_lists_builtins():
    with pytest.raises(StageError, match="hellaswag"):
        load_task("no_such_task")
