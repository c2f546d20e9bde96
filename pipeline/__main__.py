"""lmdag from the command line.

    python -m pipeline --help                         the stages and commands
    python -m pipeline dag [experiment=ci]            the DAG's steps, inputs and keys, on one screen
    python -m pipeline status [experiment=ci]         which steps are done, missing, or stale (made by other code)
    python -m pipeline <stage> --help                 a stage's inputs and config with its defaults
    python -m pipeline <step> [key=value ...]         run one step of the DAG (its inputs must be done)
    python -m pipeline <stage> in=PATH out=PATH [in.ROLE=PATH] [key=value ...]
                                                      run a stage on your own files
    python -m pipeline run-step PLAN [--input ROLE=DIR] [--part NAME ARGS ...] [--log FILE] [--threads N]
                                                      what Snakemake's jobs run: one step from its plan file
    python -m pipeline generate model=DIR prompt="..." [max_tokens=64 temperature=0.8 ...]
    python -m pipeline serve model=DIR [port=8000]    an OpenAI-compatible server on 127.0.0.1

Overrides use Hydra's grammar; a key without a group prefix belongs to the stage named
(``python -m pipeline filter min_words=20`` sets ``filter.min_words``).
"""
from __future__ import annotations

import importlib
import sys

from omegaconf import OmegaConf

from pipeline.core.errors import StageError, write_error
from pipeline.stage import stage_module, stage_names

# Commands that are not stages: name -> "module:function(argv) -> exit code".
COMMANDS = {
    "model": "pipeline.model:main",
    "train": "pipeline.core.train.config:main",
    "report": "pipeline.report:main",
    "generate": "pipeline.core.inference.cli:generate_main",
    # `serve model=DIR` serves a model; `serve in=MODEL out=DIR` runs the serve stage's check.
    "serve": "pipeline.core.inference.cli:serve_main",
}


def _summary(module) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def usage() -> str:
    lines = [__doc__.strip(), "", "stages:"]
    lines += [f"  {name:<10} {_summary(stage_module(name))}" for name in stage_names()]
    lines += ["", "commands:", "  dag        the steps of the DAG", "  status     done / missing / stale steps",
              "  run-step   one step from its plan file (Snakemake's jobs)"]
    described = {"generate": "generate text from a model directory (the inference engine)",
                 "serve": "an OpenAI-compatible HTTP server for a model directory"}
    for name, target in COMMANDS.items():
        lines.append(f"  {name:<10} {described.get(name) or _summary(importlib.import_module(target.split(':')[0]))}")
    return "\n".join(lines)


def stage_help(stage: str) -> str:
    from pipeline.config import compose
    from pipeline.core.dag import stage_config

    module = stage_module(stage)
    inputs = "\n".join(f"  {role}: {i.what}{' (optional)' if i.optional else ''}" for role, i in module.INPUTS.items())
    return (f"{(module.__doc__ or '').strip()}\n\ninputs:\n{inputs or '  none (a source stage)'}\n\n"
            f"config `{stage}` (its defaults in pipeline/{stage}/, presets in conf/{stage}/, with the DAG's settings):\n"
            + OmegaConf.to_yaml(stage_config(compose([]), stage)))


def _run_step_command(args: list[str]) -> int:
    from pipeline import runner

    if not args or args[0].startswith("-"):
        raise StageError("usage: python -m pipeline run-step PLAN [--input ROLE=DIR] [--part NAME ARGS ...] "
                         "[--log FILE] [--threads N]")
    plan, rest = args[0], args[1:]
    extra, part, part_args, log, threads = {}, None, [], None, None
    while rest:
        flag = rest.pop(0)
        if flag == "--input" and rest and "=" in rest[0]:
            role, path = rest.pop(0).split("=", 1)
            extra[role] = path
        elif flag == "--log" and rest:
            log = rest.pop(0)
        elif flag == "--threads" and rest:
            threads = int(rest.pop(0))
        elif flag == "--part" and rest:
            part, part_args, rest = rest[0], rest[1:], []
        else:
            raise StageError(f"run-step: unexpected argument {flag!r}")
    runner.run_plan(plan, extra, part, part_args, log, threads)
    return 0


def _split_args(args: list[str]) -> tuple[dict[str, str], str | None, list[str]]:
    ins, out, overrides = {}, None, []
    for a in args:
        if a.startswith("in="):
            ins[""] = a[3:]  # the stage's first input
        elif a.startswith("in.") and "=" in a:
            role, path = a[3:].split("=", 1)
            ins[role] = path
        elif a.startswith("out="):
            out = a[4:]
        else:
            overrides.append(a)
    return ins, out, overrides


def main(argv: list[str]) -> int:
    from pipeline import runner
    from pipeline.config import normalize_overrides

    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, args = argv[0], argv[1:]
    if name == "run-step":
        return _run_step_command(args)
    if name in ("dag", "status"):
        from pipeline import status

        return status.main(name, args)
    runs_stage = name in stage_names() and any(a.startswith(("in=", "in.", "out=")) for a in args)
    if name in COMMANDS and not runs_stage:
        module, func = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), func)(args)
    stage = name if name in stage_names() else None
    if stage and ("-h" in args or "--help" in args):
        print(stage_help(stage))
        return 0
    ins, out, overrides = _split_args(args)
    overrides = normalize_overrides(overrides, stage)
    if ins or out is not None:
        if stage is None:
            raise StageError(f"in=/out= run a stage on your files; {name!r} is not a stage ({', '.join(stage_names())})")
        if out is None:
            raise StageError("in= needs out= (a directory, or a .jsonl/.parquet file)")
        runner.run_on_files(stage, overrides, ins, out)
    else:
        print(f"{name}: {runner.run_configured(name, overrides)}")
    return 0


def entry() -> None:
    try:
        sys.exit(main(sys.argv[1:]))
    except StageError as err:
        print(f"lmdag error: {err}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        if (clear := write_error(err)) is None:
            raise
        print(f"lmdag error: {clear}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entry()
