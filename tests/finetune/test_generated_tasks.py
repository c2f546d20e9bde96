"""The generated tasks: held-out problems never trained on, and wrong answers that are near misses
(the preference pairs DPO and the reward model learn from)."""
from pipeline.core.tasks import generated


def _letters(spelled: str) -> str:
    return spelled.replace(" ", "")


def test_no_heldout_problem_is_in_the_training_split():
    for task in generated.TASKS:
        train = {r["question"] for r in generated.examples(task, "train", 2000)}
        test = {r["question"] for r in generated.examples(task, "test", 400)}
        assert train and test and not train & test, task


def test_every_wrong_answer_is_a_near_miss_of_the_right_one():
    kinds = {"reverse": set(), "uppercase": set(), "word_order": set()}
    for task in generated.TASKS:
        for r in generated.examples(task, "test", 300):
            right, wrong = r["answer"], r["wrong"]
            assert wrong != right, r
            if task == "arithmetic":
                assert 0 < abs(int(wrong) - int(right)) <= 2, r
            elif task == "reverse":
                asked = _letters(r["question"].split(":", 1)[1])
                assert len(_letters(wrong)) == len(asked), r
                diff = sum(a != b for a, b in zip(_letters(wrong), _letters(right)))
                kinds["reverse"].add("not reversed" if _letters(wrong) == asked else f"{diff} letters off")
            elif task == "uppercase":
                asked = _letters(r["question"].split(":", 1)[1])
                assert _letters(wrong).lower() == asked or sum(a != b for a, b in zip(_letters(wrong), _letters(right))) == 1, r
                kinds["uppercase"].add("half done" if _letters(wrong).lower() == asked else "one letter off")
            elif task == "word_order":
                assert sorted(wrong.split()) == sorted(right.split()), r
                kinds["word_order"].add(tuple(right.split().index(w) for w in wrong.split()))
            elif task == "passage_qa":
                assert wrong.split()[0] == right.split()[0] and wrong.split()[1] in r["question"], r
    # each kind of near miss occurs: not a single fixed corruption a model can learn to spot
    assert {"not reversed", "1 letters off", "2 letters off"} <= kinds["reverse"]
    assert kinds["uppercase"] == {"half done", "one letter off"}
    assert len(kinds["word_order"]) == 5  # every other order of three words


def test_a_problems_wrong_answer_is_fixed_by_the_problem():
    """Drawn from the problem's key, so every seed and split gives one problem the same pair."""
    seen = {}
    for seed in range(3):
        for r in generated.examples("word_order", "train", 500, seed=seed):
            assert seen.setdefault(r["question"], r["wrong"]) == r["wrong"]
