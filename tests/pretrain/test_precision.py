import torch

from pipeline.core.train.precision import resolve


def test_auto_is_fp32_on_cpu():
    p = resolve("auto", torch.device("cpu"))
    assert p.name == "fp32" and p.dtype is None and not p.scaler().is_enabled()


def test_bf16_autocast_runs_matmuls_in_bf16_and_keeps_fp32_weights():
    p = resolve("bf16", torch.device("cpu"))
    lin = torch.nn.Linear(8, 8)
    with p.autocast():
        y = lin(torch.randn(2, 8))
    assert y.dtype == torch.bfloat16 and lin.weight.dtype == torch.float32
    assert not p.scaler().is_enabled()  # bf16 has fp32's range: no loss scaling


def test_fp16_loss_scaling_skips_an_overflowing_step_and_halves_the_scale():
    p = resolve("fp16", torch.device("cpu"))
    scaler = p.scaler()
    assert scaler.is_enabled()
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=1.0)
    scale0 = scaler.get_scale()
    scaler.scale((w * torch.tensor([float("inf"), 1.0, 1.0])).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(w.detach(), torch.ones(3))  # the step was skipped
    assert scaler.get_scale() == scale0 / 2
    opt.zero_grad()
    scaler.scale(w.sum()).backward()
    scaler.unscale_(opt)
    assert torch.allclose(w.grad, torch.ones(3))  # unscaled before clipping sees it
    scaler.step(opt)
    scaler.update()
    assert torch.allclose(w.detach(), torch.zeros(3))
