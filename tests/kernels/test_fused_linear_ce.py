import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.kernels.kernel_checks import DEVICE, DTYPES, TOL, assert_close, leaves
from kernels import reference
from kernels.fused_linear_ce import linear_cross_entropy as triton_lce

# Loss and gradients of one fused call vs lm_head + F.cross_entropy on the full logits in
# fp32. Half precision rounds the chunk logits and d(logits) to the input dtype (as Liger
# does), so compare with tolerances relative to the gradients' size.
CE_TOL = {**TOL, torch.float32: dict(atol=1e-5, rtol=1e-4), torch.float16: dict(atol=1e-2, rtol=1e-2)}


def _case(N, H, V, dtype, ignore_every=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(N, H, generator=g)).to(DEVICE, dtype)
    weight = (torch.randn(V, H, generator=g) / H ** 0.5).to(DEVICE, dtype)
    targets = torch.randint(0, V, (N,), generator=g)
    if ignore_every:
        targets[::ignore_every] = -100
    return hidden, weight, targets.to(DEVICE)


def _loss_and_grads(fn, hidden, weight, targets, scale=1.0, **kw):
    h, w = leaves(hidden, weight)
    loss = fn(h, w, targets, **kw)
    (loss * scale).backward()
    return loss.detach(), h.grad, w.grad


def _expected(hidden, weight, targets, scale=1.0, **kw):
    return _loss_and_grads(reference.naive_linear_cross_entropy, hidden.float(), weight.float(), targets,
                           scale, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H,V,chunk,smoothing,ignore_every",
                         [(67, 32, 32000, 32, 0.1, 7), (123, 64, 1001, 50, 0.0, 5), (1, 16, 257, 4096, 0.0, 0)],
                         ids=["vocab32k-smooth", "odd-vocab", "one-row"])
def test_fused_linear_ce_matches_full_logits(N, H, V, chunk, smoothing, ignore_every, dtype):
    hidden, weight, targets = _case(N, H, V, dtype, ignore_every)
    kw = dict(label_smoothing=smoothing)
    got = _loss_and_grads(triton_lce, hidden, weight, targets, 2.0, chunk_size=chunk, **kw)
    want = _expected(hidden, weight, targets, 2.0, **kw)
    assert got[0].dtype == torch.float32
    assert_close(got, want, CE_TOL[dtype], "loss,dh,dw")
    assert got[2].dtype == weight.dtype and got[1].dtype == hidden.dtype


@pytest.mark.parametrize("fn", [triton_lce, reference.linear_cross_entropy], ids=["triton", "reference"])
def test_all_targets_ignored_gives_zero_loss_and_grads(fn):
    hidden, weight, _ = _case(8, 16, 100, torch.float32)
    loss, dh, dw = _loss_and_grads(fn, hidden, weight, torch.full((8,), -100, device=DEVICE))
    assert loss.item() == 0.0 and dh.abs().sum() == 0 and dw.abs().sum() == 0


@pytest.mark.parametrize("fn", [triton_lce, reference.linear_cross_entropy], ids=["triton", "reference"])
def test_custom_ignore_index(fn):
    hidden, weight, targets = _case(20, 16, 50, torch.float32)
    targets[::3] = 0
    got = fn(hidden, weight, targets, ignore_index=0, chunk_size=7)
    want = reference.naive_linear_cross_entropy(hidden, weight, targets, ignore_index=0)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_chunked_reference_gradients_are_exact(smoothing):
    # fp64: the chunked reference must equal autograd through the full logits to rounding.
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(45, 12, generator=g, dtype=torch.float64)
    weight = torch.randn(33, 12, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 33, (45,), generator=g)
    targets[::4] = -100
    got = _loss_and_grads(reference.linear_cross_entropy, hidden, weight, targets, 3.0,
                          label_smoothing=smoothing, chunk_size=8)
    want = _loss_and_grads(reference.naive_linear_cross_entropy, hidden, weight, targets, 3.0,
                           label_smoothing=smoothing)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("fn", [triton_lce, reference.linear_cross_entropy], ids=["triton", "reference"])
def test_only_weight_or_only_hidden_requires_grad(fn):
    hidden, weight, targets = _case(30, 16, 40, torch.float32)
    want = _expected(hidden, weight, targets)
    w = weight.clone().requires_grad_()
    fn(hidden, w, targets, chunk_size=8).backward()
    torch.testing.assert_close(w.grad, want[2])
    h = hidden.clone().requires_grad_()
    fn(h, weight, targets, chunk_size=8).backward()
    torch.testing.assert_close(h.grad, want[1])


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor (bytes) any op creates, inside autograd Functions included.

    Bytes, not elements: the Triton interpreter copies kernel arguments as byte tensors."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view:  # views (weight.t(), slices) allocate nothing
            return out
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


@pytest.mark.parametrize("fn", [triton_lce, reference.linear_cross_entropy], ids=["triton", "reference"])
def test_never_materialises_full_logits(fn):
    N, H, V, chunk = 256, 16, 3000, 32
    hidden, weight, targets = _case(N, H, V, torch.float32)
    h, w = leaves(hidden, weight)
    with _LargestTensor() as mode:
        fn(h, w, targets, chunk_size=chunk, label_smoothing=0.1).backward()
    assert mode.largest <= chunk * V * 4 < N * V * 4  # one fp32 (chunk, V) block at most
    naive = _LargestTensor()
    with naive:
        reference.naive_linear_cross_entropy(*leaves(hidden, weight), targets).backward()
    assert naive.largest >= N * V * 4  # the probe does see a full-logits tensor when there is one


@pytest.mark.parametrize("fn", [triton_lce, reference.linear_cross_entropy], ids=["triton", "reference"])
def test_no_grad_computes_loss_only(fn):
    hidden, weight, targets = _case(40, 64, 500, torch.float32)  # (V, H) fp32 = 4x a chunk
    h, w = leaves(hidden, weight)
    with torch.no_grad(), _LargestTensor() as mode:
        loss = fn(h, w, targets, chunk_size=16)
    torch.testing.assert_close(loss, reference.naive_linear_cross_entropy(hidden, weight, targets))
    assert mode.largest == 16 * 500 * 4  # the chunk logits only: no (V, H) gradient accumulator


@pytest.mark.parametrize("fn", [triton_lce, reference.linear_cross_entropy], ids=["triton", "reference"])
def test_second_backward_is_refused_not_silently_wrong(fn):
    # Gradients are scaled in place in the backward, so a second pass would scale them twice.
    hidden, weight, targets = _case(10, 16, 30, torch.float32)
    h, w = leaves(hidden, weight)
    loss = fn(h, w, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


@pytest.mark.parametrize("fn", [triton_lce, reference.linear_cross_entropy], ids=["triton", "reference"])
def test_under_autocast_with_fp32_master_weights(fn):
    # How training calls it: fp32 hidden states and lm-head weight, matmuls autocast to half.
    hidden, weight, targets = _case(50, 32, 700, torch.float32, ignore_every=6)
    want = _expected(hidden, weight, targets)
    h, w = leaves(hidden, weight)
    with torch.autocast(DEVICE, dtype=torch.float16 if DEVICE == "cpu" else torch.bfloat16):
        loss = fn(h, w, targets, chunk_size=16)
    loss.backward()
    assert loss.dtype == h.grad.dtype == w.grad.dtype == torch.float32
    assert_close((loss, h.grad, w.grad), want, dict(atol=2e-3, rtol=2e-2), "autocast loss,dh,dw")
