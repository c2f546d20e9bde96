"""A tiny Llama-style model trains to the same losses with the Triton kernels as with the references.

Built only from ``kernels``' public functions (no dependency on pipeline/model), the way the
real model uses them: q/k views of a projection, q/k-norm, in-place rotary, grouped-query
attention with a prefix, SwiGLU, and the fused loss with ignored targets and smoothing.
"""

import pytest
import torch
from torch import nn

import kernels
from tests.kernels.kernel_checks import DEVICE

VOCAB, D_MODEL, N_HEAD, N_KV_HEAD, HEAD_DIM, D_MLP, T = 211, 64, 2, 1, 32, 96, 40


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn_norm, self.mlp_norm = nn.Parameter(torch.ones(D_MODEL)), nn.Parameter(torch.ones(D_MODEL))
        self.q_norm, self.k_norm = nn.Parameter(torch.ones(HEAD_DIM)), nn.Parameter(torch.ones(HEAD_DIM))
        self.q = nn.Linear(D_MODEL, N_HEAD * HEAD_DIM, bias=False)
        self.kv = nn.Linear(D_MODEL, 2 * N_KV_HEAD * HEAD_DIM, bias=False)
        self.o = nn.Linear(N_HEAD * HEAD_DIM, D_MODEL, bias=False)
        self.gate_up = nn.Linear(D_MODEL, 2 * D_MLP, bias=False)
        self.down = nn.Linear(D_MLP, D_MODEL, bias=False)

    def forward(self, x, cos, sin, prefix_len):
        B = x.shape[0]
        h = kernels.rms_norm(x, self.attn_norm)
        q = kernels.rms_norm(self.q(h).view(B, T, N_HEAD, HEAD_DIM), self.q_norm).transpose(1, 2)
        k, v = self.kv(h).view(B, T, 2 * N_KV_HEAD, HEAD_DIM).transpose(1, 2).chunk(2, dim=1)
        k = kernels.rms_norm(k, self.k_norm)
        q, k = kernels.apply_rotary(q, k, cos, sin)
        y = kernels.attention(q, k, v, causal=True, prefix_len=prefix_len)
        x = x + self.o(y.transpose(1, 2).reshape(B, T, -1))
        gate, up = self.gate_up(kernels.rms_norm(x, self.mlp_norm)).chunk(2, dim=-1)
        return x + self.down(kernels.swiglu(gate, up))


class TinyLM(nn.Module):
    def __init__(self, n_layer=2):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.blocks = nn.ModuleList(Block() for _ in range(n_layer))
        self.norm = nn.Parameter(torch.ones(D_MODEL))
        self.lm_head = nn.Linear(D_MODEL, VOCAB, bias=False)
        cos, sin = kernels.rotary_cos_sin(T, HEAD_DIM)
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def forward(self, idx, targets, prefix_len):
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, self.cos, self.sin, prefix_len)
        h = kernels.rms_norm(x, self.norm).reshape(-1, D_MODEL)
        return kernels.linear_cross_entropy(h, self.lm_head.weight, targets.reshape(-1),
                                            label_smoothing=0.05, chunk_size=27)


def _batches(steps, B=2):
    # One fixed batch, seen every step: memorising it moves the loss a lot in a few steps.
    g = torch.Generator().manual_seed(0)
    seq = torch.randint(0, VOCAB, (B, T + 1), generator=g)
    targets = seq[:, 1:].clone()
    targets[:, :4] = -100  # the prefix is context, not predicted
    for _ in range(steps):
        yield seq[:, :-1].to(DEVICE), targets.to(DEVICE)


def _train(backend, steps, n_layer):
    kernels.set_backend(backend)
    torch.manual_seed(0)
    model = TinyLM(n_layer).to(DEVICE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    prefix = torch.tensor([4, 4], device=DEVICE)
    losses = []
    for idx, targets in _batches(steps):
        loss = model(idx, targets, prefix)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model


def _converges(steps, n_layer):
    triton_losses, triton_model = _train("triton", steps, n_layer)
    torch_losses, torch_model = _train("torch", steps, n_layer)
    assert triton_losses == pytest.approx(torch_losses, rel=1e-4, abs=1e-4)
    assert torch_losses[-1] < torch_losses[0] - 0.5, torch_losses  # it learns, so the match means something
    for (name, a), b in zip(triton_model.named_parameters(), torch_model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3, msg=name)


def test_tiny_model_trains_to_the_same_loss_with_triton_and_torch():
    _converges(steps=3, n_layer=1)


@pytest.mark.slow
def test_two_layer_model_over_more_steps():
    _converges(steps=10, n_layer=2)
