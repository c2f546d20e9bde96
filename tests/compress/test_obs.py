"""GPTQ and SparseGPT (one OBS engine) on a layer with correlated inputs: each must beat its
calibration-free counterpart on the objective it minimises, ||X W^T - X W'^T||."""
import pytest
import torch

from pipeline.compress.calibrate import output_error
from pipeline.compress.obs import Hessian, gptq, sparsegpt
from pipeline.compress.prune import mask_from_scores
from pipeline.model.quantized import dequantize, expand_groups, rtn


def layer(seed=0, out_f=64, in_f=256, rows=2048):
    """A weight and inputs whose channels are correlated and of uneven scale, as activations are."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(in_f, in_f, generator=g) / in_f ** 0.5
    X = (torch.randn(rows, in_f, generator=g) @ mix) * torch.linspace(0.2, 4, in_f)
    W = torch.randn(out_f, in_f, generator=g) * 0.1
    H = Hessian(in_f)
    H.add(X)
    return W, H


def dequant(codes, scale, zero, group_size):
    n = codes.shape[1]
    return dequantize(codes, expand_groups(scale, group_size, n), expand_groups(zero, group_size, n))


@pytest.mark.parametrize("bits,act_order,symmetric", [(4, False, True), (3, False, True), (4, True, True), (3, True, False)])
def test_gptq_has_lower_output_error_than_round_to_nearest(bits, act_order, symmetric):
    W, H = layer()
    codes, scale, zero, _ = gptq(W, H.matrix(), bits, 64, symmetric, act_order=act_order)
    e_gptq = output_error(W, dequant(codes, scale, zero, 64), H.matrix())
    e_rtn = output_error(W, dequant(*rtn(W, bits, 64, symmetric), 64), H.matrix())
    assert e_gptq < 0.8 * e_rtn
    assert int(codes.min()) >= -(1 << (bits - 1)) and int(codes.max()) < 1 << (bits - 1)


def test_gptq_with_uncorrelated_unit_inputs_is_round_to_nearest():
    """H = c I: no column's error can be compensated by another, so GPTQ rounds to nearest."""
    W, _ = layer()
    codes, scale, zero, _ = gptq(W, torch.eye(256) * 2, 4, 64, True)
    q, s, z = rtn(W, 4, 64, True)
    torch.testing.assert_close(codes, q, rtol=0, atol=0)
    torch.testing.assert_close(scale, s)


def test_gptq_keeps_pruned_weights_at_zero():
    W, H = layer()
    W = W.clone()
    W[:, ::2] = 0
    codes, scale, zero, _ = gptq(W, H.matrix(), 4, 64, True)
    assert bool((dequant(codes, scale, zero, 64)[:, ::2] == 0).all())


def test_dead_input_columns_are_zeroed():
    W, H = layer()
    m = H.matrix()
    m[:, 5] = 0
    m[5, :] = 0
    codes, scale, zero, _ = gptq(W, m, 4, 64, True)
    assert bool((dequant(codes, scale, zero, 64)[:, 5] == 0).all())


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_sparsegpt_prunes_exactly_and_beats_magnitude(sparsity):
    W, H = layer(1)
    pruned, _ = sparsegpt(W, H.matrix(), sparsity, block_size=64)
    assert abs(float((pruned == 0).float().mean()) - sparsity) < 0.01
    magnitude = W.clone()
    magnitude[mask_from_scores(W.abs(), sparsity, 0, 0, per_row=False)] = 0
    assert output_error(W, pruned, H.matrix()) < output_error(W, magnitude, H.matrix())


def test_the_obs_update_compensates_a_fixed_mask():
    """The kept weights' update alone (mask fixed, as Wanda's) must cut the output error."""
    from pipeline.compress.obs import inverse_cholesky, sweep

    W, H = layer(1)
    mask = mask_from_scores(W.abs() * H.column_norms()[None, :], 0.5, 0, 0, per_row=True)

    class Fixed:
        def block(self, i1, W1, U1):
            pass

        def column(self, j, w, W1, U1, i):
            return torch.where(mask[:, j], torch.zeros_like(w), w)

    updated = W.clone()
    sweep(updated, inverse_cholesky(H.matrix(), updated, 0.01), 64, Fixed())
    plain = W.clone()
    plain[mask] = 0
    assert bool((updated[mask] == 0).all())
    assert output_error(W, updated, H.matrix()) < 0.8 * output_error(W, plain, H.matrix())


def test_sparsegpt_two_of_four():
    W, H = layer(2)
    pruned, _ = sparsegpt(W, H.matrix(), n=2, m=4)
    per_group = (pruned.reshape(64, -1, 4) == 0).sum(-1)
    assert bool((per_group >= 2).all()) and abs(float((pruned == 0).float().mean()) - 0.5) < 1e-6
