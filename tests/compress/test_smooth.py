"""SmoothQuant's migration-strength search: the grid point (or no smoothing) with the least W8A8
output error, and a stage that records what it chose."""
import json

import torch

from pipeline.compress.smooth import searched_smooth_scale, smooth_scale, w8a8_error


def rows_with_outlier_channels(n=512, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    X[:, :3] *= 60.0  # a few activation channels far larger than the rest, as in LLMs
    W = torch.randn(32, d, generator=g) * 0.05
    return X, W


def test_search_beats_no_smoothing_and_the_fixed_strength_on_outlier_channels():
    X, W = rows_with_outlier_channels()
    x_max, w_max = X.abs().amax(0), W.abs().amax(0)
    s, alpha, ratio = searched_smooth_scale(X, x_max, W, w_max, grid=10)
    assert alpha is not None and 0 < alpha <= 1 and ratio < 0.5  # smoothing halves the error at least
    assert w8a8_error(X, W, s) <= w8a8_error(X, W, smooth_scale(x_max, w_max, 0.5))
    assert w8a8_error(X, W, s) < w8a8_error(X, W, torch.ones(X.shape[1]))


def test_search_returns_the_least_error_candidate_no_smoothing_included():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(512, 64, generator=g)
    W = torch.randn(32, 64, generator=g) * 0.05
    W[:, :3] *= 50.0  # outliers in the weights, not the activations
    x_max, w_max = X.abs().amax(0), W.abs().amax(0)
    s, alpha, ratio = searched_smooth_scale(X, x_max, W, w_max, grid=10)
    candidates = [w8a8_error(X, W, torch.ones(64))] + [w8a8_error(X, W, smooth_scale(x_max, w_max, k / 10))
                                                       for k in range(11)]
    assert w8a8_error(X, W, s) == min(candidates)
    assert ratio == min(candidates) / candidates[0]


def test_stage_records_the_searched_strength_per_layer(model_dir, token_dir, tmp_path):
    from tests.compress.test_stage import compress

    stats = compress(model_dir, token_dir, tmp_path / "sq", methods=["smoothquant"], smooth_grid=4)
    errors = json.loads((tmp_path / "sq" / "compression.json").read_text())["errors"]
    chosen = {e["smooth_alpha"] for e in errors.values() if "smooth_alpha" in e}
    assert chosen <= {None, 0.0, 0.25, 0.5, 0.75, 1.0} and chosen
    assert all(e["smooth_loss_vs_unsmoothed"] <= 1.0 for e in errors.values() if "smooth_alpha" in e)
    assert stats["label"] == "smoothquant a searched /4"
