"""An output that cannot be written — a file where a directory must be, a full disk — is one
clear error naming the path, and nothing that looks finished is left behind.

A full disk is simulated with a file-size limit (``ulimit -f``): Python ignores SIGXFSZ, so a
write past the limit fails with EFBIG, as a write to a full disk fails with ENOSPC.
"""
import json
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pipeline(*args, limit_kb: int | None = None):
    cmd = " ".join([sys.executable, "-m", "pipeline", *args])
    if limit_kb is not None:
        cmd = f"ulimit -f {limit_kb * 2}; {cmd}"  # 512-byte blocks
    return subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True)


def test_a_file_where_the_output_directory_must_be(tmp_path):
    (tmp_path / "docs.jsonl").write_text(json.dumps({"id": "a", "text": "one two three four five. " * 20}) + "\n")
    (tmp_path / "taken").write_text("a file")
    proc = pipeline("filter", f"in={tmp_path / 'docs.jsonl'}", f"out={tmp_path / 'taken' / 'out'}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"cannot write {tmp_path / 'taken'}" in proc.stderr and "a file is in the way" in proc.stderr


def test_a_full_disk_names_the_path_and_publishes_nothing(tmp_path):
    rng = random.Random(0)
    words = "the of and a to in is it that was for on are with as his they be at one have this from".split()
    rows = [{"id": f"d{i}", "text": " ".join(rng.choice(words) for _ in range(300)) + "."} for i in range(400)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shards = tmp_path / "shards"
    proc = pipeline("collect", f"in={tmp_path / 'docs.jsonl'}", f"out={shards}")
    assert proc.returncode == 1 and "collect.sources=[PATH,...]" in proc.stderr, proc.stderr[-3000:]
    proc = pipeline("collect", f"sources=[{tmp_path / 'docs.jsonl'}]", f"out={shards}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "filtered"
    proc = pipeline("filter", f"in={shards}", f"out={out}", limit_kb=32)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "lmdag error: filter: cannot write" in proc.stderr and "File too large" in proc.stderr
    assert str(out) in proc.stderr  # the directory being written, when the writer names no file
    assert not out.exists() and not list(tmp_path.glob(".tmp-*"))  # nothing published, no temp left
