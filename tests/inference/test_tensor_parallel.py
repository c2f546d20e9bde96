"""Two processes (torchrun, gloo) each holding half of every block generate the tokens one
process does."""
import json
import os
import subprocess
import sys

import pytest

from pipeline.core.errors import StageError
from pipeline.core.inference import Engine, SamplingParams
from pipeline.core.inference.tensor_parallel import shard
from tests.inference.conftest import random_model, write_model_dir

PROMPTS = ["the quick", "Once upon a time there was a café", "def main():\n"]


def test_two_processes_generate_what_one_does(tokenizer_dir, tmp_path, repo):
    d = write_model_dir(tmp_path / "m", tokenizer_dir, model=random_model(n_layer=2, n_head=4, n_kv_head=2))
    greedy = Engine.from_dir(d).generate(PROMPTS, SamplingParams(max_tokens=16, temperature=0))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "pipeline.core.inference.tensor_parallel", f"model={d}", *[f"prompt={p}" for p in PROMPTS],
           "max_tokens=16", "temperature=0"]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    outs = json.loads(run.stdout.strip().splitlines()[-1])
    assert [o["token_ids"] for o in outs] == [g.token_ids for g in greedy]
    assert [o["text"] for o in outs] == [g.text for g in greedy]


def test_shapes_that_do_not_split_are_refused():
    with pytest.raises(StageError, match="divisible by 2"):
        shard(random_model(n_kv_head=1), 0, 2)
