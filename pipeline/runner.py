"""Running a step the three ways: from its plan file (Snakemake's jobs), as a step of the
composed DAG (``python -m pipeline <step>``), and on a user's own files (``in=… out=…``)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.core import docs
from pipeline.core.errors import StageError
from pipeline.core.plan import read_plan, step_dir, write_plan
from pipeline.core.publish import is_complete
from pipeline.core.source import fingerprint
from pipeline.stage import execute, stage_module


def _planned_inputs(plan: dict) -> dict[str, Path]:
    inputs = {}
    for role, ref in plan["inputs"].items():
        path = Path(ref["dir"])
        if not is_complete(path):
            raise StageError(f"{plan['step']}: its input {role!r} (step {ref['step']}) at {path} is missing or "
                             f"unfinished; run `snakemake -c all {path}` (that step and what it needs) or the whole DAG first")
        inputs[role] = path
    return inputs


def run_plan(path, extra_inputs: dict[str, str] | None = None, part: str | None = None, args=(),
             log_path: str | None = None, threads: int | None = None) -> Path:
    """Run the step a plan file describes (or one ``part`` of a split step) into its directory."""
    plan = read_plan(path)
    module = stage_module(plan["stage"])
    if module.VERSION != plan["version"]:
        raise StageError(f"{path}: planned with {plan['stage']} VERSION {plan['version']}, the code is now "
                         f"VERSION {module.VERSION}: plan again (rerun snakemake)")
    if threads:  # what Snakemake gave the job; torch reads it when imported
        os.environ["OMP_NUM_THREADS"] = str(threads)
    inputs = {**_planned_inputs(plan), **{r: Path(p) for r, p in (extra_inputs or {}).items()}}
    if part is not None:
        return _run_part(plan, module, part, inputs, list(args))
    out = step_dir(plan["results"], plan["step"], plan["key"])
    execute(plan["stage"], plan["config"], inputs, out, key=plan["key"], step=plan["step"],
            input_refs={r: f"{ref['step']}/{ref['key']}" for r, ref in plan["inputs"].items()},
            source=fingerprint(plan["stage"]), extra_log=Path(log_path) if log_path else None)
    return out


def _run_part(plan: dict, module, part: str, inputs: dict, args: list[str]) -> Path:
    import logging

    from pipeline.core.step import typed_config

    parts = getattr(module, "PARTS", {})
    if part not in parts:
        raise StageError(f"{plan['stage']} has no part {part!r}; its parts are {list(parts) or 'none'}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    dirs = {p: step_dir(plan["results"], plan["step"], plan["key"], p) for p in parts}
    parts[part](typed_config(module.Config, plan["config"]), inputs, dirs, args,
                logging.getLogger(f"lmdag.{plan['step']}.{part}"))
    return dirs[part]


def find_step(steps, name: str):
    """The step called ``name``, or the only step of stage ``name``."""
    by_name = {s.name: s for s in steps}
    if name in by_name:
        return by_name[name]
    of_stage = [s for s in steps if s.stage == name]
    if len(of_stage) == 1:
        return of_stage[0]
    if of_stage:
        raise StageError(f"stage {name!r} runs as several steps ({', '.join(s.name for s in of_stage)}): name one")
    raise StageError(f"no step {name!r} in the DAG; its steps are: {', '.join(by_name)}")


def run_configured(name: str, overrides: list[str]) -> Path:
    """``python -m pipeline <step> [key=value ...]``: one step of the composed DAG, into its
    results directory, from finished inputs (as the DAG would run it)."""
    from pipeline.config import compose
    from pipeline.core.dag import build_steps

    cfg = compose(overrides)
    step = find_step(build_steps(cfg), name)
    for s in step.inputs.values():
        write_plan(s, cfg.results_dir)
    return run_plan(write_plan(step, cfg.results_dir))


# ------------------------------------------------------------------ users' own files

def _as_document_dir(in_path: str, tmp: Path, log_name: str) -> Path:
    """A user's input as a directory of document shards (a step directory is used as it is)."""
    path = Path(in_path)
    if path.is_dir() and is_complete(path):
        return path
    if path.is_dir() and docs.shard_paths(path):
        target = tmp / "input"
        shutil.copytree(path, target)
        (target / "stats.json").write_text("{}")
        return target
    # Anything else is read by the collect stage's readers (jsonl, parquet, txt, warc, dirs).
    target = tmp / "input"
    stats = execute("collect", {"sources": [in_path]}, {}, target, key=log_name)
    if stats["dropped"]:
        print(f"reading {in_path}: set aside {stats['dropped']} (see the collect stage's reasons)")
    return target


def export_documents(stage_out: Path, out_file: Path) -> int:
    """Kept documents of a step directory as one .jsonl or .parquet file."""
    rows = list(docs.iter_docs(stage_out))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.suffix == ".parquet":
        docs.write_table(out_file, rows)
    else:
        with open(out_file, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({**r, "meta": json.loads(r["meta"])}, ensure_ascii=False) + "\n")
    return len(rows)


def run_on_files(stage: str, overrides: list[str], ins: dict[str, str], out_path: str) -> Path:
    """``python -m pipeline <stage> in=… [in.ROLE=…] out=…``: one stage on the user's own files.

    ``in=`` is the stage's first input (documents, tokens or a model); ``out`` is a directory
    (a full step directory with stats.json) or, for document stages, a ``.jsonl``/``.parquet``
    file of the kept documents.
    """
    from pipeline.config import compose
    from pipeline.core.dag import stage_config

    module = stage_module(stage)
    config = stage_config(compose(overrides), stage)
    roles = list(module.INPUTS)
    given = {(roles[0] if r == "" and roles else r): p for r, p in ins.items()}
    unknown = sorted(set(given) - set(roles))
    if unknown and not roles:  # the DAG's first stage: it reads what its config names
        hint = f": name your files in its config, e.g. {stage}.sources=[PATH,...]" if "sources" in config else ""
        raise StageError(f"{stage} reads no other step (it starts the DAG), so in= means nothing to it{hint}")
    if unknown:
        raise StageError(f"{stage} has no input {unknown}; its inputs are {roles or 'none'} (in=PATH is {roles[:1]})")
    missing = [r for r, i in module.INPUTS.items() if not i.optional and r not in given]
    if missing:
        raise StageError(f"{stage} reads {missing} ({module.INPUTS[missing[0]].what}): give it with "
                         f"{'in' if missing[0] == roles[0] else 'in.' + missing[0]}=PATH")
    out = Path(out_path)
    with tempfile.TemporaryDirectory(prefix=f"lmdag-{stage}-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = {r: (_as_document_dir(p, tmp / r, f"{stage}-input") if r == "docs" else Path(p))
                  for r, p in given.items()}
        for r, p in inputs.items():
            if not p.exists():
                raise StageError(f"{stage}: input {r!r}: no such file or directory: {p}")
        if out.suffix in (".jsonl", ".parquet"):
            execute(stage, config, inputs, tmp / "out")
            n = export_documents(tmp / "out", out)
            stats_path = out.with_name(out.name + ".stats.json")
            shutil.copy(tmp / "out" / "stats.json", stats_path)
            print(f"{stage}: wrote {n} documents to {out} (stats in {stats_path})")
        else:
            stats = execute(stage, config, inputs, out)
            shown = {k: stats[k] for k in ("docs_in", "docs_kept", "dropped") if k in stats}
            print(f"{stage}: wrote {out}" + (f" ({json.dumps(shown)})" if shown else ""))
    return out
