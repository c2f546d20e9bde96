"""Memory scheduling for weights (BMInf, FlexGen): run a model whose blocks do not all fit in
the device-memory budget by keeping some on the host and moving each in just before use.

    Engine.from_dir(model_dir, EngineConfig(device="cuda", device_budget_mb=512))

Plan: everything outside the blocks (embedding, final norm, head) stays on the device, and
so do as many blocks as fit once two streaming slots are set aside; the other blocks live
on the host (pinned memory on CUDA) and are streamed through the two slots: while block i
computes, block i+1 (in the order the forward visits them, wrapping to the next step) is
copied in on a side stream, so the transfer overlaps compute as in BMInf; block i's slot is
released when it is done. On the CPU there is no second memory, so a streamed block's
parameters are emptied and rebuilt from the host copy on demand: the same schedule and
bookkeeping run, and ``peak_bytes`` shows what the device would have held.

Only the parameters and buffers of each block move, whatever their modules are (quantized
or LoRA-wrapped Linears included); the forward still calls the modules.
"""
from __future__ import annotations

import contextlib

import torch

from pipeline.core.errors import StageError


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def _nbytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(module).values())


def plan(fixed: int, block_sizes: list[int], budget: int) -> set[int]:
    """Blocks kept resident; the rest stream through two slots of the largest block's size."""
    if fixed + sum(block_sizes) <= budget:
        return set(range(len(block_sizes)))
    slots = min(2, len(block_sizes)) * max(block_sizes)
    if fixed + slots > budget:
        raise StageError(f"device_budget_mb={budget / 2**20:.2f} is too small: the embedding, head and norms "
                         f"({fixed / 2**20:.2f} MiB) plus two streamed blocks ({slots / 2**20:.2f} MiB) must fit")
    room, resident = budget - fixed - slots, set()
    for i, size in enumerate(block_sizes):
        if size <= room:
            resident.add(i)
            room -= size
    return resident


class LayerOffloader:
    def __init__(self, model, device, budget_bytes: int):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        blocks = list(model.blocks)
        sizes = [_nbytes(b) for b in blocks]
        outside = {t.data_ptr(): t for n, t in _tensors(model).items() if not n.startswith("blocks.")}
        fixed = sum(t.numel() * t.element_size() for t in outside.values())  # a tied head counted once
        self.resident = plan(fixed, sizes, budget_bytes)
        self.streamed = [i for i in range(len(blocks)) if i not in self.resident]
        self.blocks, self.sizes, self.budget = blocks, sizes, budget_bytes
        for i, block in enumerate(blocks):  # move all but the streamed blocks to the device
            if i in self.resident:
                block.to(self.device)
        for name, child in model.named_children():
            if name != "blocks":
                child.to(self.device)
        for name, buf in list(model.named_buffers(recurse=False)):  # position tables
            setattr(model, name, buf.to(self.device))
        self.host = {i: {n: self._host_copy(t) for n, t in _tensors(blocks[i]).items()} for i in self.streamed}
        for i in self.streamed:
            self._empty(i)
        self.loaded: dict[int, torch.cuda.Event | None] = {}
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.resident_bytes = fixed + sum(sizes[i] for i in self.resident)
        self.peak_bytes = self.resident_bytes
        self.transfers = 0

    def _host_copy(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu").clone()
        return t.pin_memory() if self.cuda else t

    def _empty(self, i: int) -> None:
        for name, t in _tensors(self.blocks[i]).items():
            t.data = torch.empty(0, dtype=t.dtype, device=self.device)

    def _load(self, i: int) -> None:
        """Copy streamed block i onto the device (asynchronously on CUDA)."""
        with torch.cuda.stream(self.stream) if self.cuda else contextlib.nullcontext():
            for name, t in _tensors(self.blocks[i]).items():
                t.data = self.host[i][name].to(self.device, non_blocking=True, copy=True)
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record(self.stream)
        self.loaded[i] = event
        self.transfers += 1
        held = self.resident_bytes + sum(self.sizes[j] for j in self.loaded)
        self.peak_bytes = max(self.peak_bytes, held)

    def _next_streamed(self, i: int) -> int:
        later = [j for j in self.streamed if j > i]
        return later[0] if later else self.streamed[0]

    def before(self, i: int) -> None:
        if i in self.resident:
            return
        if i not in self.loaded:
            self._load(i)
        event = self.loaded[i]
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        nxt = self._next_streamed(i)
        if nxt != i and nxt not in self.loaded:
            self._load(nxt)  # overlaps block i's compute on CUDA

    def after(self, i: int) -> None:
        if i in self.resident:
            return
        if self.cuda:  # the compute stream used these tensors: their memory is reusable after it
            for t in _tensors(self.blocks[i]).values():
                t.data.record_stream(torch.cuda.current_stream(self.device))
        self._empty(i)
        del self.loaded[i]

    def stats(self) -> dict:
        return {"budget_bytes": self.budget, "resident_blocks": sorted(self.resident), "streamed_blocks": self.streamed,
                "peak_bytes": self.peak_bytes, "transfers": self.transfers}
