import pytest
import torch

from tests.kernels.kernel_checks import DEVICE, DTYPES, TOL, assert_close, run_with_grads
from kernels import reference
from kernels.rms_norm import rms_norm


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 123, 64), (1, 7, 200), (3, 4096), (5, 1, 1, 33)],
                         ids=["model", "odd-width", "wide", "4d-tiny"])
def test_rms_norm_matches_reference(shape, dtype):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3).to(DEVICE, dtype)
    w = (torch.rand(shape[-1]) + 0.5).to(DEVICE, dtype)
    dy = torch.randn(shape).to(DEVICE, dtype)
    out, grads = run_with_grads(rms_norm, (x, w), dy, eps=1e-5)
    ref_out, ref_grads = run_with_grads(reference.rms_norm, (x, w), dy, eps=1e-5)
    assert out[0].dtype == dtype and out[0].shape == shape
    assert_close(out, ref_out, TOL[dtype], "y")
    assert_close(grads[:1], ref_grads[:1], TOL[dtype], "dx")
    # dw sums over every row: scale the tolerance with the row count's sqrt.
    rows = x.numel() // shape[-1]
    tol = {k: v * max(1.0, rows ** 0.5) for k, v in TOL[dtype].items()}
    assert_close(grads[1:], ref_grads[1:], tol, "dw")


def test_rms_norm_reference_matches_torch():
    x, w = torch.randn(4, 9, 48, dtype=torch.float64), torch.rand(48, dtype=torch.float64)
    expected = torch.nn.functional.rms_norm(x, (48,), w, eps=1e-6)
    torch.testing.assert_close(reference.rms_norm(x, w, 1e-6), expected)


def test_rms_norm_output_is_not_a_view():
    # The model rotates q in place right after q-norm; autograd forbids that on a view
    # created inside a custom Function, so the kernel must return a tensor of its own.
    x = torch.randn(2, 3, 4, 32, device=DEVICE, requires_grad=True)
    y = rms_norm(x, torch.ones(32, device=DEVICE))
    assert y._base is None
    y.transpose(1, 2).mul_(2.0)  # raises if y were a view made inside the Function


def test_rms_norm_rejects_mismatched_weight():
    with pytest.raises(ValueError, match="weight"):
        rms_norm(torch.randn(3, 8, device=DEVICE), torch.ones(9, device=DEVICE))
