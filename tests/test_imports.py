"""Package boundaries: stage packages import pipeline.core, pipeline.model and kernels, never
another stage; data stages and config composition never import torch."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.stage import SHARED_PACKAGES, stage_names

ROOT = Path(__file__).resolve().parents[1] / "pipeline"
DATA_STAGES = ["collect", "filter", "dedup", "scrub", "tokenize"]


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def test_stage_packages_never_import_another_stage():
    stages = set(stage_names())
    crossings = []
    for stage in stages:
        for path in (ROOT / stage).rglob("*.py"):
            for line, module in imported_modules(path):
                parts = module.split(".")
                if len(parts) > 1 and parts[0] == "pipeline" and parts[1] in stages and parts[1] != stage:
                    crossings.append(f"{path.relative_to(ROOT.parent)}:{line} imports {module}")
                if module in ("pipeline.stage", "pipeline.runner", "pipeline.config"):
                    crossings.append(f"{path.relative_to(ROOT.parent)}:{line} imports the DAG machinery {module}")
    assert not crossings, "move the shared piece into pipeline/core:\n" + "\n".join(sorted(crossings))


def test_shared_packages_never_import_a_stage():
    stages = set(stage_names())
    crossings = [f"{path.relative_to(ROOT.parent)}:{line} imports {module}"
                 for shared in SHARED_PACKAGES for path in (ROOT / shared).rglob("*.py")
                 for line, module in imported_modules(path)
                 if module.split(".")[:1] == ["pipeline"] and len(module.split(".")) > 1
                 and module.split(".")[1] in stages]
    assert not crossings, "\n".join(crossings)


def test_the_checker_would_catch_a_crossing(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipeline.evaluate.lm import CausalLM\n")
    assert imported_modules(bad) == [(2, "pipeline.evaluate.lm"), (2, "pipeline.evaluate.lm.CausalLM")]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("stage", DATA_STAGES)
def test_data_stages_do_not_import_torch(stage):
    assert "torch" not in _modules_after(f"import pipeline.{stage}")


def test_composing_a_config_and_planning_do_not_import_torch():
    loaded = _modules_after("from pipeline.config import compose\nfrom pipeline.core.dag import build_steps\n"
                            "[s.key for s in build_steps(compose(['experiment=ci']))]")
    assert "torch" not in loaded
