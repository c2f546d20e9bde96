"""Every kernel compiles for A100 (sm_80) and H100 (sm_90) without a GPU, within shared memory.

The interpreter runs any block size; a real GPU refuses a kernel whose shared memory exceeds
its limit. ``kernels.aot`` compiles the launch configurations the kernels really use with
Triton's CUDA backend (bundled ptxas, no driver needed), in a subprocess because the kernels
must be JIT functions there, not interpreted ones. Compiling is slow (seconds per attention
kernel), so the fast suite covers the H100 training path and the rest is marked slow.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels.aot import KERNELS, SHARED_LIMIT

REPO = Path(__file__).resolve().parents[2]
TRAINING = r"^(?!attn_.*_(prefix|full)$)"  # everything except the prefix/non-causal attention variants


def _compile(jobs, extra_code="", workers=2):
    """jobs: [(kernel, dtype, head_dim, arch, only)] -> one row per compiled launch.

    Compiling is single-threaded, so the jobs are split over ``workers`` processes (CI has 2 cores)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    shares = [jobs[i::workers] for i in range(workers)] if jobs else [[]]
    procs = []
    for share in shares:
        code = ("import json, sys\nfrom kernels.aot import report\n"
                f"rows = [r for job in {share!r} for r in report(*job)]\n{extra_code}"
                "print(json.dumps(rows))")
        procs.append(subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    rows = []
    for proc in procs:
        out, err = proc.communicate()
        assert proc.returncode == 0, err[-3000:]
        rows += json.loads(out.strip().splitlines()[-1])
    return rows


def _assert_fits(rows):
    too_big = [f"sm_{r['arch']} {r['launch']} {r['dtype']} D={r['head_dim']}: {r['shared']} B > {r['limit']} B"
               for r in rows if r["shared"] > r["limit"]]
    assert not too_big, "shared memory over the limit:\n" + "\n".join(too_big)


def test_training_kernels_compile_for_h100_in_bf16():
    # Attention's launches are the slow ones: one job each, so the two workers share them.
    attention = [("flash_attention", "bf16", 128, 90, rf"^attn_{launch}") for launch in
                 ("fwd_causal|bwd_delta", "bwd_dkdv_causal", "bwd_dq_causal")]
    rows = _compile(attention + [(k, "bf16", 128, 90, TRAINING) for k in KERNELS if k != "flash_attention"])
    assert {r["kernel"] for r in rows} == set(KERNELS)
    launches = {r["launch"] for r in rows}
    assert {"attn_fwd_causal", "attn_bwd_dkdv_causal", "attn_bwd_dq_causal", "linear_ce_plain"} <= launches
    assert all(r["limit"] == 227 * 1024 for r in rows)
    _assert_fits(rows)
    # Attention must really stage its tiles in shared memory, or the number above means nothing.
    assert min(r["shared"] for r in rows if r["launch"].startswith("attn_fwd")) > 16 * 1024


@pytest.mark.slow
def test_all_kernels_compile_for_a100_and_h100():
    attention_prefix = r"^attn_(fwd|bwd_dkdv|bwd_dq)_prefix$"
    jobs = [("flash_attention", "bf16", 128, 90, r"_(prefix|full)$")]
    # Shared memory grows with the element size and head dim; 16-bit D=64 has its own tiles.
    # fp16 shares bf16's tiles and element size, so bf16 stands for both. fp32 (3xTF32 dots,
    # slow to compile) uses one config everywhere, and the A100's is the binding limit.
    for arch, dtype, head_dim in [(80, "bf16", 128), (80, "fp32", 128), (80, "bf16", 64), (90, "bf16", 64)]:
        jobs.append(("flash_attention", dtype, head_dim, arch, attention_prefix))
    jobs += [(k, "bf16", 128, 80, "") for k in KERNELS if k != "flash_attention"]
    rows = _compile(jobs)
    assert {(r["arch"], r["kernel"]) for r in rows} >= {(a, k) for a in (80, 90) for k in KERNELS} - \
        {(90, k) for k in KERNELS if k != "flash_attention"}
    _assert_fits(rows)


def test_the_shared_memory_check_catches_an_oversized_config():
    # 128x128 bf16 tiles with 4 stages cannot fit an A100; if this compiled "within limits"
    # the checks above would be meaningless.
    oversized = (
        "import torch, kernels.flash_attention as fa\n"
        "from kernels.aot import compile_spec, SHARED_LIMIT\n"
        "fa.fwd_config = lambda *a: (128, 128, 8, 4)\n"
        "spec = [s for s in fa.compile_specs(torch.bfloat16, 80, head_dim=128) if s.name == 'attn_fwd_causal'][0]\n"
        "rows = [{'shared': compile_spec(spec, 80).metadata.shared, 'limit': SHARED_LIMIT[80]}]\n")
    rows = _compile([], extra_code=oversized)
    assert rows[0]["shared"] > SHARED_LIMIT[80] == rows[0]["limit"]
