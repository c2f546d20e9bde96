"""Run one task on one model: build requests, ask the LM, score each document, aggregate."""
from __future__ import annotations

import re
import time

from pipeline.evaluate import metrics as M
from pipeline.evaluate.lm import LM
from pipeline.core.tasks import Task, build_requests
from pipeline.core.errors import StageError


def _apply_filter(steps: list[dict], text: str, where: str) -> str:
    """lm-eval filters on one response: regex (findall, group_select, fallback), whitespace, case."""
    for step in steps:
        fn = step.get("function")
        if fn == "regex":
            found = re.findall(step.get("regex_pattern", r"#### (\-?[0-9\.\,]+)"), text)
            if found:
                m = found[step.get("group_select", 0)]
                if isinstance(m, tuple):
                    m = next((x for x in m if x), step.get("fallback", "[invalid]"))
                text = m.strip()
            else:
                text = step.get("fallback", "[invalid]")
        elif fn == "remove_whitespace":
            text = text.lstrip()
        elif fn == "lowercase":
            text = text.lower()
        elif fn == "uppercase":
            text = text.upper()
        elif fn == "take_first":
            pass  # one response per document already
        else:
            raise StageError(f"{where}: filter function {fn!r} is not supported "
                             f"(regex, remove_whitespace, lowercase, uppercase, take_first)")
    return text


def _generation_scores(task: Task, doc: dict, response: str) -> dict:
    gold = task.doc_to_target(doc)
    if task.cfg.get("doc_to_choice") is not None:
        gold = task.doc_to_choice(doc)[gold]
    golds = [str(g) for g in gold] if isinstance(gold, list) else [str(gold)]
    out: dict = {}
    for m in task.metrics():
        name = m["metric"]
        if name == "exact_match":
            out[name] = max(M.exact_match(response, g, **m) for g in golds)
        elif name == "squad_em":
            out[name] = M.squad_em(response, golds)
        elif name == "squad_f1":
            out[name] = M.squad_f1(response, golds)
        elif name in ("bleu", "chrf"):
            out[name] = (golds, response)
        elif name in ("rouge1", "rouge2", "rougeL"):
            out[name] = M.rouge(response, golds)[name]
        else:
            raise StageError(f"task {task.name}: metric {name!r} is not available for generate_until "
                             f"(exact_match, squad_em, squad_f1, bleu, chrf, rouge1, rouge2, rougeL)")
    return out


def evaluate(lm: LM, task: Task, bootstrap_iters: int = 200, n_samples: int = 3, chat=None,
             system_instruction: str = "") -> dict:
    """Scores of ``task`` under ``lm``: {metric: value}, {metric_stderr: ...}, counts, samples.
    ``chat`` (conversation -> prompt text) formats every prompt with the model's chat template."""
    started = time.time()
    if chat is not None and task.output_type == "loglikelihood_rolling":
        chat = None  # a perplexity over a text has no turns to format
    reqs = build_requests(task, chat, system_instruction)
    per_doc: list[dict] = []
    kind = task.output_type
    if kind in ("multiple_choice", "loglikelihood"):
        flat = [p for r in reqs for p in r["pairs"]]
        results = iter(lm.loglikelihood(flat))
        for r in reqs:
            got = [next(results) for _ in r["pairs"]]
            doc = r["doc"]
            if kind == "loglikelihood":
                ll, greedy = got[0]
                per_doc.append({"perplexity": ll, "acc": float(greedy)})
            else:
                choices = task.doc_to_choice(doc)
                gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
                per_doc.append(M.multiple_choice([g[0] for g in got], [g[1] for g in got], choices, gold))
    elif kind == "loglikelihood_rolling":
        lls = lm.loglikelihood_rolling([r["text"] for r in reqs])
        for r, ll in zip(reqs, lls):
            words, nbytes = M.count_words(r["text"]), M.count_bytes(r["text"])
            per_doc.append({"word_perplexity": (ll, words), "byte_perplexity": (ll, nbytes),
                            "bits_per_byte": (ll, nbytes)})
    else:
        gen_kwargs = dict(task.cfg.get("generation_kwargs") or {"until": [task.fewshot_delimiter]})
        gen_kwargs.setdefault("until", [task.fewshot_delimiter])
        responses = lm.generate_until([(r["context"], gen_kwargs) for r in reqs])
        filters = task.cfg.get("filter_list") or [{"name": "none", "filter": [{"function": "take_first"}]}]
        for r, resp in zip(reqs, responses):
            scores: dict = {"response": resp}
            for f in filters:
                filtered = _apply_filter(f.get("filter", []), resp, f"task {task.name}")
                suffix = "" if f.get("name", "none") == "none" else f",{f['name']}"
                scores.update({f"{k}{suffix}": v for k, v in _generation_scores(task, r["doc"], filtered).items()})
            per_doc.append(scores)

    wanted = [m["metric"] for m in task.metrics()]
    names = [k for k in per_doc[0] if k.split(",")[0] in wanted]
    result: dict = {"task": task.name, "output_type": kind, "docs": len(per_doc),
                    "num_fewshot": task.num_fewshot, "chat_template": chat is not None, "metrics": {}, "stderr": {}}
    for name in names:
        value, stderr = M.aggregate(name.split(",")[0], [d[name] for d in per_doc], bootstrap_iters) \
            if name.split(",")[0] in M.CORPUS_METRICS else M.aggregate(name, [d[name] for d in per_doc])
        result["metrics"][name] = value
        result["stderr"][name] = stderr
    if kind == "multiple_choice":
        result["random_baseline"] = sum(d["random_baseline"] for d in per_doc) / len(per_doc)
    result["samples"] = _samples(task, reqs, per_doc, n_samples)
    result["wall_s"] = round(time.time() - started, 3)
    return result


def _samples(task: Task, reqs: list[dict], per_doc: list[dict], n: int) -> list[dict]:
    out = []
    for r, d in list(zip(reqs, per_doc))[:n]:
        s = {"doc_id": r["doc_id"]}
        if "pairs" in r:
            s["context"] = r["pairs"][0][0][-600:] if isinstance(r["pairs"][0][0], str) else ""
            s["continuations"] = [p[1] for p in r["pairs"]][:8]
        elif "context" in r:
            s["context"], s["response"] = r["context"][-600:], d.get("response", "")
        else:
            s["text"] = r["text"][:300]
        s.update({k: v for k, v in d.items() if isinstance(v, (int, float, str)) and k != "response"})
        if "pred" in d:
            s["pred"], s["gold"] = d["pred"], d["gold"]
        out.append(s)
    return out
