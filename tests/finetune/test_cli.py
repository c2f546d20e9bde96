"""The finetune stage's docstring commands, run as written through `python -m pipeline` (with
test-size overrides appended) on the tiny model: each writes a model directory. The stage's
own training recipe is `finetune.train.*` (a bare `train.*` is the top-level pretraining group)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.finetune

REPO = Path(__file__).resolve().parents[2]
TINY = ["finetune.train.steps=2", "finetune.train.batch_size=2", "finetune.train.warmup_steps=0", "finetune.train.eval_every=1",
        "finetune.train.checkpoint_every=2", "finetune.train.threads=1", "finetune.train.compile=false",
        "finetune.train.progress=false", "train_examples=8", "heldout_examples=1",
        "eval_max_new_tokens=4", "rl.group_size=2", "rl.max_new_tokens=4"]


def docstring_commands() -> list[list[str]]:
    lines = [line.strip() for line in pipeline.finetune.__doc__.splitlines()]
    return [line.split("  ")[0].split()[4:] for line in lines if line.startswith("python -m pipeline finetune ")]


@pytest.mark.slow
def test_every_docstring_command_runs(base_dir, tmp_path):
    shutil.copytree(base_dir, tmp_path / "results" / "pretrain" / "k1")
    shutil.copytree(base_dir, tmp_path / "base")
    chat = {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": " hi"}]}
    (tmp_path / "chats.jsonl").write_text(json.dumps(chat) + "\n")
    commands = docstring_commands()
    assert len(commands) == 7
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for args in commands:
        args = [a.replace("<key>", "k1") for a in args]
        proc = subprocess.run([sys.executable, "-m", "pipeline", "finetune", *args, *TINY], cwd=tmp_path, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        out = tmp_path / next(a for a in args if a.startswith("out=")).removeprefix("out=")
        stats = json.loads((out / "stats.json").read_text())
        assert (out / "model.safetensors").is_file() and stats["stage"] == "finetune" and stats["steps"] == 2
