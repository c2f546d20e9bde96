"""Tasks in lm-evaluation-harness's YAML format, on local data (``dataset_path: json``).

A user points us at a task file they already have for lm-eval:

    task: my_task
    dataset_path: json
    dataset_kwargs: {data_files: {validation: data/my_task.jsonl}}
    output_type: multiple_choice          # | loglikelihood | loglikelihood_rolling | generate_until
    doc_to_text: "Question: {{question}}\\nAnswer:"
    doc_to_choice: "{{choices}}"
    doc_to_target: "{{label}}"

Prompts are rendered exactly as lm-eval renders them (same Jinja environment, the same
few-shot sampler and delimiters, the same ``doc_to_*`` rules), so a task scores the same in
both tools. Relative ``data_files`` are read relative to the YAML file; ``builtin:NAME/...``
names a built-in data set (see ``builtin.py``), ``generated:NAME/test.jsonl`` a generated
task's held-out split (see ``generated.py``). Python hooks (``!function``) are not run:
preprocess the data into the JSON file instead.
"""
from __future__ import annotations

import ast
import gzip
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import StageError

BUILTIN_DIR = Path(__file__).parent / "yaml"
OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling", "generate_until")
# lm-eval's default metrics per output type (lm_eval/api/registry.py DEFAULT_METRIC_REGISTRY).
DEFAULT_METRICS = {
    "loglikelihood": ["perplexity", "acc"],
    "loglikelihood_rolling": ["word_perplexity", "byte_perplexity", "bits_per_byte"],
    "multiple_choice": ["acc", "acc_norm"],
    "generate_until": ["exact_match"],
}
KNOWN_KEYS = {
    "task", "task_alias", "tag", "group", "dataset_path", "dataset_name", "dataset_kwargs",
    "training_split", "validation_split", "test_split", "fewshot_split", "fewshot_config",
    "num_fewshot", "doc_to_text", "doc_to_target", "doc_to_choice", "description",
    "target_delimiter", "fewshot_delimiter", "gen_prefix", "output_type", "metric_list",
    "generation_kwargs", "filter_list", "repeats", "should_decontaminate",
    "doc_to_decontamination_query", "metadata", "include", "process_docs", "process_results",
    "unsafe_code",
}


class _FunctionTag(yaml.SafeLoader):
    """Loads lm-eval's ``!function module.fn`` as a marker, so we can name it in the error."""


_FunctionTag.add_constructor("!function", lambda loader, node: {"__function__": loader.construct_scalar(node)})


def _jinja():
    # lm_eval/utils.py: the same environment, so templates render byte for byte alike.
    from jinja2 import BaseLoader, Environment, StrictUndefined

    env = Environment(loader=BaseLoader, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters["regex_replace"] = lambda s, pattern, repl, count=0: re.sub(pattern, repl, s, count=count)
    return env


_ENV = None


def render(template: str, doc: dict) -> str:
    global _ENV
    if _ENV is None:
        _ENV = _jinja()
    return _ENV.from_string(template).render(**doc)


def read_yaml(path: Path) -> dict:
    try:
        cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_FunctionTag) or {}
    except yaml.YAMLError as err:
        raise StageError(f"task file {path}: not valid YAML: {err}") from None
    if not isinstance(cfg, dict):
        raise StageError(f"task file {path}: expected a mapping of lm-eval task keys")
    if "include" in cfg:  # lm-eval: keys of the included file, overridden by this one
        base = read_yaml((path.parent / cfg.pop("include")).resolve())
        cfg = {**base, **cfg}
    for key, value in cfg.items():
        if isinstance(value, dict) and "__function__" in value:
            raise StageError(
                f"task file {path}: key {key!r} is `!function {value['__function__']}` (Python code), "
                f"which lmdag does not run; write the processed fields into the data file and use "
                f"Jinja templates (`{{{{field}}}}`) instead")
    unknown = set(cfg) - KNOWN_KEYS
    if unknown:
        raise StageError(f"task file {path}: unknown key(s) {sorted(unknown)}; lm-eval task keys "
                         f"lmdag reads: {sorted(KNOWN_KEYS)}")
    return cfg


def read_json_records(path: Path) -> list[dict]:
    """JSON Lines (or one JSON array), optionally gzipped; a bad line names file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise StageError(f"data file {path} does not exist") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise StageError(f"{path}: not valid JSON: {err}") from None
    else:
        rows = []
        # split on "\n" only: str.splitlines would also break at U+2028 inside a JSON string.
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise StageError(f"{path}:{n}: not valid JSON ({err.msg})") from None
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise StageError(f"{path}: record {n} is a {type(row).__name__}, expected a JSON object")
    return rows


@dataclass
class Task:
    """One lm-eval task: its config, eval documents and few-shot pool, and prompt rendering."""

    name: str
    cfg: dict
    docs: list[dict]
    fewshot_pool: list[dict] = field(default_factory=list)
    source: str = ""
    num_fewshot: int = 0
    fewshot_seed: int = 1234

    # -- lm-eval's ConfigurableTask rules ---------------------------------------------------
    @property
    def output_type(self) -> str:
        return self.cfg.get("output_type", "generate_until")

    @property
    def target_delimiter(self) -> str:
        return self.cfg.get("target_delimiter", " ")

    @property
    def fewshot_delimiter(self) -> str:
        return self.cfg.get("fewshot_delimiter", "\n\n")

    @property
    def features(self) -> set[str]:
        return set(self.docs[0]) if self.docs else set()

    def metrics(self) -> list[dict]:
        listed = self.cfg.get("metric_list")
        if not listed:
            return [{"metric": m} for m in DEFAULT_METRICS[self.output_type]]
        return [m if isinstance(m, dict) else {"metric": m} for m in listed]

    def doc_to_text(self, doc: dict, spec=None):
        spec = self.cfg.get("doc_to_text") if spec is None else spec
        if isinstance(spec, int):
            return spec
        if spec in self.features:
            return doc[spec]
        text = render(spec, doc)
        if text.isdigit() and self.cfg.get("doc_to_choice") is not None:
            return ast.literal_eval(text)
        return text

    def doc_to_target(self, doc: dict, spec=None):
        spec = self.cfg.get("doc_to_target") if spec is None else spec
        if isinstance(spec, (int, list)):
            return spec
        if spec in self.features:
            return doc[spec]
        text = render(spec, doc)
        if text.isdigit() and self.cfg.get("doc_to_choice") is not None:
            return ast.literal_eval(text)
        if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
            try:
                return ast.literal_eval(text)
            except (SyntaxError, ValueError):
                return text
        return text

    def doc_to_choice(self, doc: dict, spec=None) -> list[str]:
        spec = self.cfg.get("doc_to_choice") if spec is None else spec
        if isinstance(spec, list):
            return spec
        if isinstance(spec, dict):
            return list(spec.values())
        if spec in self.features:
            return doc[spec]
        return ast.literal_eval(render(spec, doc))

    def description(self, doc: dict) -> str:
        d = self.cfg.get("description") or ""
        return (doc[d] if d in doc else render(d, doc)) if d else ""

    def gen_prefix(self, doc: dict) -> str | None:
        g = self.cfg.get("gen_prefix")
        if g is None:
            return None
        return doc[g] if g in doc else render(g, doc)

    @property
    def multiple_input(self) -> bool:
        """Winogrande-style: doc_to_text gives the gold index, the choices are the contexts."""
        return bool(self.docs) and self.cfg.get("doc_to_choice") is not None and isinstance(self.doc_to_text(self.docs[0]), int)

    # -- prompts ---------------------------------------------------------------------------
    def _turn(self, q: str, c, a, gen_prefix, tgt_delim: str, few_delim: str) -> str:
        """lm-eval's build_qa_turn rendered as plain text."""
        has_answer = a is not None and a != ""
        needs = bool(gen_prefix) and q != "" and not (q[-1].isspace() or gen_prefix[0].isspace())
        out = q + (tgt_delim if (has_answer and not gen_prefix) or needs else "")
        if has_answer:
            answer = c[a] if (c and isinstance(a, int)) else a[0] if isinstance(a, list) else a
            if gen_prefix and answer:  # lm-eval's maybe_delimit(gen_prefix, answer, " ")
                answer = gen_prefix + answer if (gen_prefix[-1].isspace() or answer[0].isspace()) else f"{gen_prefix} {answer}"
            elif gen_prefix:
                answer = gen_prefix
            out += answer + few_delim
        elif gen_prefix:
            out += gen_prefix
        return out

    def _sample_fewshot(self, doc: dict, rnd: random.Random) -> list[dict]:
        n = self.num_fewshot
        if n <= 0:
            return []
        fs_cfg = self.cfg.get("fewshot_config") or {}
        pool = self.fewshot_pool
        if not pool:
            raise StageError(f"task {self.name}: num_fewshot={n} but no few-shot documents "
                             f"(set fewshot_split or training_split in its YAML)")
        if fs_cfg.get("sampler", "default") == "first_n":
            pool = [x for x in pool if x != doc] if self._fewshot_from_test else pool
            return pool[:n]
        if self._fewshot_from_test:  # lm-eval draws n+1 and drops the evaluated document
            got = [x for x in rnd.sample(list(pool), n + 1) if x != doc][:n]
            if len(got) < n:
                got = rnd.sample([x for x in pool if x != doc], n)
            return got
        return rnd.sample(list(pool), n)

    @property
    def _fewshot_from_test(self) -> bool:
        return self._fewshot_split() == self.cfg.get("test_split")

    def _fewshot_split(self):
        fs_cfg = self.cfg.get("fewshot_config") or {}
        return fs_cfg.get("split") or self.cfg.get("fewshot_split")

    def context(self, doc: dict, rnd: random.Random) -> str | list[str]:
        """The prompt for ``doc``: description, few-shot examples, then the question."""
        prefix = self.description(doc)
        for ex in self._sample_fewshot(doc, rnd):
            q = self.doc_to_text(ex)
            c = self.doc_to_choice(ex) if self.cfg.get("doc_to_choice") is not None else None
            a = self.doc_to_target(ex)
            if self.multiple_input:
                q, c = c[q], None
            prefix += self._turn(q, c, a, self.gen_prefix(ex), self.target_delimiter, self.fewshot_delimiter)
        gp = self.gen_prefix(doc)
        if self.multiple_input:
            return [prefix + self._turn(ctx, None, None, gp, "", "") for ctx in self.doc_to_choice(doc)]
        return prefix + self._turn(self.doc_to_text(doc), None, None, gp, self.target_delimiter, "")

    def chat_messages(self, doc: dict, rnd: random.Random, system_instruction: str = "") -> list:
        """The prompt as a conversation, as lm-eval's ``--apply_chat_template --fewshot_as_multiturn``:
        the system instruction and the description as the system turn, each few-shot example as
        a user and an assistant turn, the question as the last user turn (one conversation per
        context for Winogrande-style tasks)."""
        system = self.fewshot_delimiter.join(x for x in (system_instruction, self.description(doc)) if x)
        turns = [{"role": "system", "content": system}] if system else []
        for ex in self._sample_fewshot(doc, rnd):
            q = self.doc_to_text(ex)
            c = self.doc_to_choice(ex) if self.cfg.get("doc_to_choice") is not None else None
            a = self.doc_to_target(ex)
            if self.multiple_input:
                q, c = c[q], None
            answer = c[a] if (c and isinstance(a, int)) else a[0] if isinstance(a, list) else a
            turns += [{"role": "user", "content": str(q)}, {"role": "assistant", "content": str(answer)}]
        if self.multiple_input:
            return [turns + [{"role": "user", "content": ctx}] for ctx in self.doc_to_choice(doc)]
        return turns + [{"role": "user", "content": str(self.doc_to_text(doc))}]

    def decontamination_text(self, doc: dict) -> str:
        """The text checked for overlap with the training data (lm-eval's decontamination query)."""
        q = self.cfg.get("doc_to_decontamination_query")
        if q:
            return doc[q] if q in doc else render(q, doc)
        if self.output_type == "loglikelihood_rolling":
            return str(self.doc_to_target(doc))
        text = self.doc_to_text(doc)
        if isinstance(text, int):
            text = self.doc_to_choice(doc)[text]
        return str(text)


def _resolve_data_file(spec: str, base: Path) -> Path:
    if spec.startswith("builtin:"):
        from pipeline.core.tasks import builtin

        return builtin.data_file(spec[len("builtin:"):])
    if spec.startswith("generated:"):
        from pipeline.core.tasks import generated

        return generated.data_file(spec[len("generated:"):])
    p = Path(spec).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _split_files(cfg: dict, base: Path, where: str) -> dict[str, list[Path]]:
    files = (cfg.get("dataset_kwargs") or {}).get("data_files")
    if files is None:
        raise StageError(f"{where}: needs dataset_kwargs.data_files (lmdag reads local JSON data only)")
    if isinstance(files, (str, list)):  # datasets' convention: unnamed files form the "train" split
        files = {"train": files}
    return {split: [_resolve_data_file(str(f), base) for f in (v if isinstance(v, list) else [v])]
            for split, v in files.items()}


def task_path(spec: str, extra_dirs: list[str] | tuple = ()) -> Path:
    """A task named by file path, or by name in extra_dirs or the built-in task folder."""
    p = Path(spec).expanduser()
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise StageError(f"task file {p} does not exist")
        return p.resolve()
    for d in [*map(Path, extra_dirs), BUILTIN_DIR]:
        for candidate in (d / f"{spec}.yaml", d / f"{spec}.yml"):
            if candidate.is_file():
                return candidate.resolve()
    names = sorted(q.stem for q in BUILTIN_DIR.glob("*.yaml"))
    raise StageError(f"unknown task {spec!r}: give a path to an lm-eval YAML file, or a built-in task: {', '.join(names)}")


def load_task(spec: str, limit: int = 0, num_fewshot: int | None = None, fewshot_seed: int = 1234,
              extra_dirs=()) -> Task:
    """Load a task's YAML and data; ``limit`` keeps the first N documents (lm_eval --limit)."""
    path = task_path(spec, extra_dirs)
    cfg = read_yaml(path)
    where = f"task file {path}"
    if cfg.get("dataset_path", "json") not in ("json", "jsonl"):
        raise StageError(f"{where}: dataset_path {cfg['dataset_path']!r}: lmdag reads local data "
                         f"(dataset_path: json with dataset_kwargs.data_files); the Hub is not reached")
    for key in ("process_docs", "process_results"):
        if key in cfg:
            raise StageError(f"{where}: {key} needs Python code, which lmdag does not run; "
                             f"preprocess the data file instead")
    out = cfg.get("output_type", "generate_until")
    if out not in OUTPUT_TYPES:
        raise StageError(f"{where}: output_type {out!r} is not one of {OUTPUT_TYPES}")
    if cfg.get("repeats", 1) != 1:
        raise StageError(f"{where}: repeats != 1 is not supported")
    splits = _split_files(cfg, path.parent, where)
    eval_split = cfg.get("test_split") or cfg.get("validation_split")
    if eval_split is None:
        raise StageError(f"{where}: set test_split or validation_split (the split to evaluate)")
    if eval_split not in splits:
        raise StageError(f"{where}: split {eval_split!r} has no data_files (have: {sorted(splits)})")
    docs = [r for f in splits[eval_split] for r in read_json_records(f)]
    if not docs:
        raise StageError(f"{where}: split {eval_split!r} holds no documents ({splits[eval_split]})")
    if limit:
        docs = docs[:limit]
    task = Task(name=cfg.get("task") or path.stem, cfg=cfg, docs=docs, source=str(path),
                num_fewshot=cfg.get("num_fewshot") or 0 if num_fewshot is None else num_fewshot,
                fewshot_seed=fewshot_seed)
    fs_split = task._fewshot_split() or (cfg.get("training_split") or cfg.get("validation_split")
                                         if task.num_fewshot else None)
    if task.num_fewshot and fs_split:
        if fs_split not in splits:
            raise StageError(f"{where}: few-shot split {fs_split!r} has no data_files (have: {sorted(splits)})")
        task.fewshot_pool = [r for f in splits[fs_split] for r in read_json_records(f)]
        if fs_split == cfg.get("test_split"):
            task.cfg.setdefault("fewshot_split", fs_split)
    _check_doc(task, docs[0], where)
    return task


def _check_doc(task: Task, doc: dict, where: str) -> None:
    """Render the first document now, so a template error names the task before any model work."""
    from jinja2 import TemplateError

    try:
        if task.output_type != "loglikelihood_rolling":
            task.doc_to_text(doc)
        task.doc_to_target(doc)
        if task.output_type == "multiple_choice":
            task.doc_to_choice(doc)
    except (TemplateError, KeyError, ValueError, SyntaxError, TypeError) as err:
        raise StageError(f"{where}: cannot render the first document with the task's templates: "
                         f"{type(err).__name__}: {err}; its fields are {sorted(doc)}") from None


def build_requests(task: Task, chat=None, system_instruction: str = "") -> list[dict]:
    """One entry per document: its context(s) and what the model is asked (lm-eval's Instances).

    ``chat``: a function from a conversation to the prompt text with the assistant's turn
    opened (the model's chat template); then every context is the chat-formatted conversation
    of ``Task.chat_messages``, followed by the task's gen_prefix.
    """
    rnd = random.Random(task.fewshot_seed)  # lm-eval: task.set_fewshot_seed(1234), one stream per task
    out = []
    for i, doc in enumerate(task.docs):
        if chat is None:
            ctx = task.context(doc, rnd)
        else:
            gen_prefix = task.gen_prefix(doc) or ""
            conversation = task.chat_messages(doc, rnd, system_instruction)
            ctx = ([chat(c) + gen_prefix for c in conversation] if task.multiple_input
                   else chat(conversation) + gen_prefix)
        entry: dict[str, Any] = {"doc_id": i, "doc": doc}
        if task.output_type == "multiple_choice":
            if task.multiple_input:
                cont = f"{task.target_delimiter}{task.doc_to_target(doc)}"
                entry["pairs"] = [(c, cont) for c in ctx]
            else:
                entry["pairs"] = [(ctx, f"{task.target_delimiter}{c}") for c in task.doc_to_choice(doc)]
        elif task.output_type == "loglikelihood":
            entry["pairs"] = [(ctx, task.doc_to_target(doc))]
        elif task.output_type == "loglikelihood_rolling":
            entry["text"] = task.doc_to_target(doc)
        else:
            entry["context"] = ctx
        out.append(entry)
    return out


def task_texts(task_names: list[str], limit: int = 0) -> list[str]:
    """The texts of the named tasks as an overlap check sees them (dedup keeps them out of training)."""
    out = []
    for name in task_names:
        task = load_task(name, limit=limit)
        out += [task.decontamination_text(d) for d in task.docs]
    return out
