"""Generated tasks with checkable answers: fine-tuning data that needs no download, and the
matching zero-shot exact-match evaluations (``yaml/chat_*.yaml``, ``generated:NAME/test.jsonl``).

    arithmetic   What is 3 + 4?                                   -> 7
    reverse      Reverse the letters: k a t                       -> t a k
    uppercase    Upper-case the letters: k a t                    -> K A T
    word_order   Reverse the order of the words: red fox runs     -> runs fox red
    passage_qa   Passage: ... Question: Which word comes right after the word fox? Reply with
                 both words.                                      -> fox runs

Two facts of byte-level BPE make these learnable by a small model. Letters are spelled one
by one in ``reverse`` and ``uppercase``: BPE writes "cat" and "tac" as unrelated tokens, so
a model could only memorise word by word; letter by letter, the task is a per-letter copy or
mapping that carries over to unseen strings (random letters, so there is no list to memorise). And BPE merges a word with the space before it
(" fox" is one token, "fox" at the start of a text another): every word of a question has a
space before it, and so does the word a passage question asks about, and the assistant's
reply (``reply``) starts with a space, so the answer is made of the very tokens the model
just read — copying, reversing and looking up work on token identity, as induction heads do.
A passage answer restates the asked word before the one after it: the look-up then is the
plain induction step (the last token read occurs in the passage: copy what followed it)
rather than a search for a word named in the question.

Every problem has a key (the numbers, the word, the passage and the asked word); a hash of
the key puts it in the held-out split or the training split, so no held-out problem is ever
trained on. Each example also has a wrong answer, a near miss of the kind a model that half
knows the task gives (off by one; the letters reversed but for one swapped pair or one wrong
letter, or not reversed at all; all but one letter upper-cased; another order of the words;
another word of the passage): preference pairs for DPO and the reward model. Near misses, so
that a pair asks what a model that half knows the task gets wrong (word_order's only wrong
answer used to be the words unchanged, which no SFT model gives). Measured (cpu_2m SFT model):
it prefers the right answer over these near misses too on every held-out string-task pair,
while its greedy answers miss up to a quarter of them; its preferences there are already right.
The letter and word tasks draw their near miss from a generator seeded by the problem's key,
so a problem's wrong answer never changes the problems drawn after it.

    examples("arithmetic", "train", 500, seed=0)   # [{"task", "question", "answer", "wrong"}, ...]
    data_file("reverse/test.jsonl")                # the evaluation split as lm-eval JSON lines
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from pathlib import Path
from typing import Callable

from pipeline.core.errors import StageError

TASKS = ("arithmetic", "reverse", "uppercase", "word_order", "passage_qa")
SPLITS = ("train", "test")
HELDOUT_FRACTION = 0.2
EVAL_DOCS = 100  # documents in each generated evaluation file
VERSION = "4"  # 4: near-miss wrong answers. Part of the evaluation files' cache path: bump when the generators change

LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = (
    "red blue green small big old new fast slow happy cold warm dark bright quiet loud soft "
    "hard cat dog bird fish horse tree river stone house road city garden window table book "
    "letter song light rain snow wind sun moon star ship train king queen child friend teacher "
    "runs walks sings reads writes jumps sleeps eats opens closes finds sees likes builds"
).split()


def _is_heldout(key: str) -> bool:
    digest = hashlib.sha256(f"lmdag-generated:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELDOUT_FRACTION


def _arithmetic(rng: random.Random) -> tuple[str, dict]:
    a, b = rng.randrange(10), rng.randrange(10)
    wrong = a + b + rng.choice([-2, -1, 1, 2]) if a + b > 1 else a + b + rng.choice([1, 2])
    return f"{a}+{b}", {"question": f"What is {a} + {b}?", "answer": str(a + b), "wrong": str(wrong)}


def _spell(word: str) -> str:
    return " ".join(word)


def _letters(rng: random.Random) -> str:
    """3 or 4 random letters: thousands of distinct problems, so the rule is learnt, not a word list."""
    return "".join(rng.choice(LETTERS) for _ in range(rng.choice((3, 4))))


def _near_miss_rng(task: str, key: str) -> random.Random:
    return random.Random(f"lmdag-near-miss:{task}:{key}")


def _one_letter_off(letters: str, rng: random.Random, alphabet: str) -> str:
    """``letters`` with one letter replaced by another of ``alphabet``."""
    i = rng.randrange(len(letters))
    return letters[:i] + rng.choice([c for c in alphabet if c != letters[i]]) + letters[i + 1:]


def _reverse_near_miss(w: str, rng: random.Random) -> str:
    right = w[::-1]
    swaps = [i for i in range(len(right) - 1) if right[i] != right[i + 1]]
    misses = [_one_letter_off(right, rng, LETTERS)]
    if w != right:
        misses.append(w)  # not reversed at all
    if swaps:
        i = rng.choice(swaps)
        misses.append(right[:i] + right[i + 1] + right[i] + right[i + 2:])  # one pair left in its first order
    return rng.choice(misses)


def _reverse(rng: random.Random) -> tuple[str, dict]:
    w = _letters(rng)
    wrong = _reverse_near_miss(w, _near_miss_rng("reverse", w))
    return w, {"question": f"Reverse the letters: {_spell(w)}", "answer": _spell(w[::-1]), "wrong": _spell(wrong)}


def _uppercase_near_miss(w: str, rng: random.Random) -> str:
    right = w.upper()
    i = rng.randrange(len(w))
    misses = [right[:i] + w[i] + right[i + 1:],  # one letter left lower-case
              w[0].upper() + w[1:],  # only the first letter done
              _one_letter_off(right, rng, LETTERS.upper())]
    return rng.choice([m for m in misses if m != right])


def _uppercase(rng: random.Random) -> tuple[str, dict]:
    w = _letters(rng)
    wrong = _uppercase_near_miss(w, _near_miss_rng("uppercase", w))
    return w, {"question": f"Upper-case the letters: {_spell(w)}", "answer": _spell(w.upper()),
               "wrong": _spell(wrong)}


def _word_order(rng: random.Random) -> tuple[str, dict]:
    words = rng.sample(WORDS, 3)
    key = " ".join(words)
    # any other order of the three words, the unchanged one included
    orders = [list(p) for p in itertools.permutations(words) if list(p) != words[::-1]]
    wrong = _near_miss_rng("word_order", key).choice(orders)
    return key, {"question": f"Reverse the order of the words: {key}",
                 "answer": " ".join(words[::-1]), "wrong": " ".join(wrong)}


def _builtin_passage(rng: random.Random, n_words: int = 12) -> str:
    return " ".join(rng.sample(WORDS, n_words))


def passage_question(passage: str, rng: random.Random) -> tuple[str, dict] | None:
    """A question on a passage: which word follows a word that occurs once (None if none does)."""
    words = passage.split()
    candidates = [i for i in range(len(words) - 1) if words.count(words[i]) == 1]
    if not candidates:
        return None
    i = rng.choice(candidates)
    others = [w for w in words if w not in (words[i], words[i + 1])]
    wrong = rng.choice(others) if others else words[i]
    question = (f"Passage: {passage}\nQuestion: Which word comes right after the word {words[i]}? "
                f"Reply with both words.")
    return f"{passage}|{i}", {"question": question, "answer": f"{words[i]} {words[i + 1]}",
                              "wrong": f"{words[i]} {wrong}"}


def _passage_qa(rng: random.Random, passages: list[str] | None = None) -> tuple[str, dict] | None:
    passage = rng.choice(passages) if passages else _builtin_passage(rng)
    return passage_question(passage, rng)


GENERATORS: dict[str, Callable] = {"arithmetic": _arithmetic, "reverse": _reverse, "uppercase": _uppercase,
                                   "word_order": _word_order, "passage_qa": _passage_qa}


def examples(task: str, split: str, n: int, seed: int = 0, passages: list[str] | None = None) -> list[dict]:
    """``n`` examples of ``task`` from ``split`` (train | test), deterministic in ``seed``.

    Problems repeat when the split has fewer than ``n`` (arithmetic has 100 problems in all);
    ``passages`` (texts of a few dozen words) replace the built-in ones for passage_qa.
    """
    if task not in GENERATORS:
        raise StageError(f"unknown generated task {task!r}; the tasks are: {', '.join(TASKS)}")
    if split not in SPLITS:
        raise StageError(f"generated task split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"{task}:{split}:{seed}")
    out, tries = [], 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise StageError(f"generated task {task}: could not draw {n} {split} examples "
                             f"(too few distinct problems; give longer or more passages)")
        made = _passage_qa(rng, passages) if task == "passage_qa" else GENERATORS[task](rng)
        if made is None:
            continue
        key, ex = made
        if _is_heldout(f"{task}:{key}") != (split == "test"):
            continue
        out.append({"task": task, **ex})
    return out


def reply(answer: str) -> str:
    """The assistant's reply that gives ``answer``: after one space, so that its words are the
    same tokens as the question's (see the module docstring); scoring strips it."""
    return " " + answer


def _cache_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("LMDAG_CACHE", user_cache_dir("lmdag"))) / "generated" / VERSION


def data_file(spec: str) -> Path:
    """``NAME/test.jsonl`` -> the file (written once, atomically): EVAL_DOCS held-out examples."""
    name, _, file = spec.partition("/")
    split = file.removesuffix(".jsonl")
    if name not in GENERATORS or split not in SPLITS:
        raise StageError(f"generated:{spec}: expected NAME/test.jsonl or NAME/train.jsonl with NAME one of {TASKS}")
    path = _cache_root() / name / f"{split}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        rows = examples(name, split, EVAL_DOCS, seed=0)
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, path)
    return path
