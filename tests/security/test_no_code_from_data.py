"""No file we read can run code: pickles, torch.load, YAML and eval are checked in the source and in use."""
import ast
import pickle
from pathlib import Path

import pytest

from pipeline.collect import safe_pickle
from pipeline.core.errors import StageError

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("pipeline", "kernels", "benchmarks", "workflow") for p in (REPO / d).rglob("*.py"))
SAFE_PICKLE = REPO / "pipeline" / "collect" / "safe_pickle.py"
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _dotted(node) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _safe_yaml_classes(tree) -> set[str]:
    """Loader classes defined in the module on top of a safe loader."""
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)
            and any(_dotted(b).split(".")[-1] in SAFE_YAML_LOADERS for b in n.bases)}


def _problems(path: Path, source: str | None = None) -> list[str]:
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"), str(path))
    safe_loaders = SAFE_YAML_LOADERS | _safe_yaml_classes(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)) and path != SAFE_PICKLE:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n.split(".")[0] in PICKLE_MODULES for n in names):
                found.append(f"{where}: imports a pickle module; unpickle only through pipeline/collect/safe_pickle.py")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name in ("eval", "exec", "compile", "__import__"):
            found.append(f"{where}: {name}() runs code")
        if name == "torch.load":
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        if name.endswith("read_pickle") or name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            found.append(f"{where}: {name} can build arbitrary objects")
        if name == "yaml.load" and _dotted(_keyword(node, "Loader")).split(".")[-1] not in safe_loaders:
            found.append(f"{where}: yaml.load with a loader that is not a SafeLoader")
        allow = _keyword(node, "allow_pickle")
        if name.endswith(".load") and isinstance(allow, ast.Constant) and allow.value is True:
            found.append(f"{where}: numpy load with allow_pickle=True")
        remote = _keyword(node, "trust_remote_code")
        if isinstance(remote, ast.Constant) and remote.value is True:
            found.append(f"{where}: trust_remote_code=True runs code from a model or dataset repository")
    return found


def test_the_source_loads_no_code_from_data():
    assert len(SOURCES) > 50  # the scan really looks at the code base
    problems = [p for path in SOURCES for p in _problems(path)]
    assert problems == []


def test_the_scan_catches_each_pattern():
    probe = REPO / "pipeline" / "_scan_probe.py"  # never written: the scan gets the source directly
    code = ("import pickle\nimport torch, yaml, numpy as np\n"
            "torch.load('x')\ntorch.load('x', weights_only=False)\nyaml.load(s, Loader=yaml.Loader)\n"
            "yaml.load(s, Loader=Safe)\neval('1')\nexec('1')\nnp.load('f', allow_pickle=True)\n"
            "m.from_pretrained('x', trust_remote_code=True)\n"
            "class Safe(yaml.SafeLoader): pass\n")
    found = {int(p.split(":")[1]): p for p in _problems(probe, code)}
    expected = {1: "imports a pickle module", 3: "torch.load without", 4: "torch.load without",
                5: "not a SafeLoader", 7: "eval() runs code", 8: "exec() runs code",
                9: "allow_pickle=True", 10: "trust_remote_code"}
    assert found.keys() == expected.keys()  # line 6: a SafeLoader subclass is fine
    assert all(what in found[line] for line, what in expected.items())


class _Runs:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_restricted_unpickler_refuses_any_callable_it_was_not_told_about(tmp_path, protocol):
    marker = tmp_path / "marker"
    with pytest.raises(pickle.UnpicklingError, match="refused to load global (posix|nt).system"):
        safe_pickle.loads(pickle.dumps(_Runs(marker), protocol=protocol))
    payload = b"cbuiltins\neval\n(S'__import__(\"os\").system(\"true\")'\ntR."
    with pytest.raises(pickle.UnpicklingError, match="refused to load global builtins.eval"):
        safe_pickle.loads(payload)
    assert not marker.exists()


def test_restricted_unpickler_reads_the_bunch_it_exists_for():
    import numpy as np

    bunch = {"data": ["post one", "post two"], "target": np.array([0, 1])}
    loaded = safe_pickle.loads(pickle.dumps(bunch, protocol=2))
    assert loaded["data"] == ["post one", "post two"] and isinstance(loaded["target"], safe_pickle.Opaque)


def test_a_task_yaml_with_a_python_tag_is_refused_without_running_it(tmp_path):
    from pipeline.core.tasks import read_yaml

    marker = tmp_path / "marker"
    task = tmp_path / "task.yaml"
    task.write_text(f"task: t\ndataset_path: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(StageError, match="not valid YAML"):
        read_yaml(task)
    assert not marker.exists()
