"""What training reports: JSONL metrics, a progress bar, MFU, optional TensorBoard."""
from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path

import torch

# Dense bf16/fp16 tensor-core peaks (no sparsity), FLOP/s per GPU, from the vendors' sheets.
GPU_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
                  "A10": 125e12, "V100": 125e12, "T4": 65e12, "4090": 165e12, "3090": 71e12}


@lru_cache(maxsize=None)
def measured_cpu_peak(threads: int, n: int = 1024, reps: int = 6) -> float:
    """fp32 matmul FLOP/s on this CPU with ``threads`` threads, the best of a few square
    matmuls after a warm-up: a benchmark's indicative CPU figure, never the stage's MFU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a @ b
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(old)
    return 2 * n**3 / best


def peak_flops(device: torch.device, override_tflops: float, threads: int) -> tuple[float, str]:
    """Peak FLOP/s of one device of the run and where the number comes from; 0 when no peak is
    stated. MFU is only meaningful against a stated peak: a matmul timed at start-up on a busy
    machine understates it (MFU above 100% was seen that way), so CPUs get none by default."""
    if override_tflops > 0:
        return override_tflops * 1e12, f"train.peak_tflops ({device.type.upper()}, stated)"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():
            if key in name:
                return flops, f"spec sheet ({name}, dense bf16)"
        return 0.0, f"unknown GPU {name!r}: set train.peak_tflops for MFU"
    return 0.0, "CPU: no stated peak (set train.peak_tflops for MFU)"


def mfu(flops_per_token: float, tokens_per_s: float, peak_total: float) -> float | None:
    """Model FLOPs utilisation (PaLM, appendix B): achieved model FLOP/s over the peak; None
    without a stated peak."""
    return flops_per_token * tokens_per_s / peak_total if peak_total > 0 else None


class MetricsLog:
    """Appends one JSON object per line; with tensorboard, mirrors the numbers as scalars."""

    def __init__(self, path: Path, tensorboard_dir: Path | None = None, log=None):
        self.path = path
        self.writer = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(tensorboard_dir))
            except ImportError:
                if log:
                    log.warning("train.tensorboard=true but the tensorboard package is missing; JSONL only")

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, record["step"])

    def truncate_after(self, step: int) -> None:
        """On resume: forget what the killed run logged after its last checkpoint."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
