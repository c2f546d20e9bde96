"""lmdag stages from the command line.

    python -m pipeline --help                      list the stages
    python -m pipeline <stage> --help              a stage's config with its defaults
    python -m pipeline <stage> [key=value ...]     run it on the composed config (as the DAG does)
    python -m pipeline <stage> in=PATH out=PATH [key=value ...]   run it on your own files

Overrides use Hydra's grammar; a key without a stage prefix belongs to the stage named
(``python -m pipeline filter min_words=20`` sets ``filter.min_words``).
"""
from __future__ import annotations

import sys

from omegaconf import OmegaConf

import importlib

from pipeline.stage import OTHER_CONFIG_GROUPS as EXTRA_COMMANDS
from pipeline.stage import STAGES, StageError, stage_module


def _summary(module) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def usage() -> str:
    lines = [__doc__.strip(), "", "stages (in DAG order):"]
    for name in STAGES:
        lines.append(f"  {name:<10} {_summary(stage_module(name))}")
    lines += ["", "other commands and config groups:"]
    for name, path in EXTRA_COMMANDS.items():
        lines.append(f"  {name:<10} {_summary(importlib.import_module(path))}")
    return "\n".join(lines)


def stage_help(stage: str) -> str:
    from pipeline.config import compose

    module = stage_module(stage)
    cfg = compose([])
    return (
        f"{(module.__doc__ or '').strip()}\n\nreads: {module.INPUTS or 'nothing (a source stage)'}\n\n"
        f"config `{stage}` (defaults from conf/{stage}/ and its schema):\n"
        + OmegaConf.to_yaml(cfg[stage], resolve=True)
    )


def main(argv: list[str]) -> int:
    from pipeline import runner

    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    stage, args = argv[0], argv[1:]
    if stage in EXTRA_COMMANDS:
        module = importlib.import_module(EXTRA_COMMANDS[stage])
        if not hasattr(module, "main"):
            print(f"{stage} is a config group, not a command; its keys and defaults:\n")
            from pipeline.config import compose

            print(OmegaConf.to_yaml(compose([])[stage], resolve=True))
            return 0
        return module.main(args)
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}\n\n{usage()}", file=sys.stderr)
        return 2
    if "-h" in args or "--help" in args:
        print(stage_help(stage))
        return 0
    if args[:1] == ["--planned"]:
        if len(args) < 2:
            raise StageError("--planned needs the stage key")
        if "--step" in args[:4]:  # one scatter/gather step of a split stage: --planned KEY RESULTS --step NAME ...
            at = args.index("--step")
            if at != 3 or len(args) < 5:
                raise StageError("usage: python -m pipeline <stage> --planned KEY RESULTS --step NAME [ARGS ...]")
            runner.run_step_from_plan_file(stage, args[4], args[1], args[2], args[5:])
            return 0
        runner.run_from_plan_file(stage, args[1], *args[2:3])
        return 0
    from pipeline.config import normalize_overrides

    in_path = out_path = None
    overrides = []
    for a in args:
        if a.startswith("in="):
            in_path = a[3:]
        elif a.startswith("out="):
            out_path = a[4:]
        else:
            overrides.append(a)
    overrides = normalize_overrides(overrides, stage)
    if out_path is not None or in_path is not None:
        if out_path is None:
            raise StageError("in= needs out= (a directory, or a .jsonl/.parquet file)")
        runner.run_on_files(stage, overrides, in_path, out_path)
    else:
        out = runner.run_planned(stage, overrides)
        print(f"{stage}: {out}")
    return 0


def entry() -> None:
    try:
        sys.exit(main(sys.argv[1:]))
    except StageError as err:
        print(f"lmdag error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entry()
