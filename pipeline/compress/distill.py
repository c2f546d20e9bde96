"""Knowledge distillation: a smaller student trained on the teacher's soft targets (Hinton et
al. 2015; DistilBERT / DistilGPT2), as a job of the shared training loop
(pipeline/core/train/loop.py: same optimizer, schedule, precision, checkpoints, resume,
torchrun workers and model kernels as pretraining).

    loss = kl_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - kl_weight) * cross-entropy(student, next token)

T^2 keeps the soft term's gradients on the scale of the hard one as T grows (Hinton et al.).
The student is the teacher's model config with ``student`` fields changed (e.g. fewer
layers); ``student_init: teacher_layers`` starts it from the teacher's embeddings, norms and
evenly spaced blocks (DistilBERT took one layer in two), which needs the same widths;
``random`` starts from the usual initialisation.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.core.errors import StageError
from pipeline.core.train.loop import Job, Spec, fit, session

ENTRY = "pipeline.compress.distill:train"
STUDENT_WEIGHTS = ".student.safetensors"  # the entry's result, read back by the stage


def student_config(teacher_cfg, overrides: dict):
    """The teacher's config with ``compress.student`` applied, checked."""
    from pipeline.model import Config as ModelConfig

    unknown = sorted(set(overrides) - set(ModelConfig.__dataclass_fields__))
    if unknown:
        raise StageError(f"compress.student: unknown model field(s) {unknown}")
    if overrides.get("vocab_size", teacher_cfg.vocab_size) != teacher_cfg.vocab_size:
        raise StageError(f"compress.student.vocab_size={overrides['vocab_size']}: the student must share the "
                         f"teacher's vocabulary ({teacher_cfg.vocab_size}) to learn its distributions")
    try:
        return dataclasses.replace(teacher_cfg, **overrides).validate()
    except ValueError as err:
        raise StageError(f"compress.student: {err}") from None


def check_init(teacher_cfg, student_cfg, init: str) -> None:
    keys = ("d_model", "d_mlp", "n_head", "n_kv_head", "qk_norm", "tie_embeddings", "pos_emb")
    differ = [k for k in keys if getattr(student_cfg, k) != getattr(teacher_cfg, k)]
    if init == "teacher_layers" and differ:
        raise StageError(f"compress.student_init=teacher_layers needs the teacher's widths; the student "
                         f"changes {differ}: use student_init=random")


def init_from_teacher(student, teacher) -> list[int]:
    """Copy embeddings, final norm, head and evenly spaced blocks; -> the teacher blocks used."""
    check_init(teacher.cfg, student.cfg, "teacher_layers")
    n_s, n_t = student.cfg.n_layer, teacher.cfg.n_layer
    picks = [round(i * (n_t - 1) / max(n_s - 1, 1)) for i in range(n_s)] if n_s > 1 else [n_t - 1]
    with torch.no_grad():
        for i, j in enumerate(picks):
            student.blocks[i].load_state_dict(teacher.blocks[j].state_dict())
        student.embed.load_state_dict(teacher.embed.state_dict())
        student.norm.load_state_dict(teacher.norm.state_dict())
        if not student.cfg.tie_embeddings:
            student.lm_head.load_state_dict(teacher.lm_head.state_dict())
    return picks


def kd_loss(teacher, temperature: float, kl_weight: float):
    def loss_fn(model, batch):
        x, y = batch
        with torch.no_grad():
            soft_targets = F.log_softmax(teacher(x)[0].float() / temperature, dim=-1)
        logits = model(x)[0].float()
        keep = (y != -100).reshape(-1)
        log_p = F.log_softmax(logits / temperature, dim=-1).reshape(-1, logits.shape[-1])[keep]
        kl = F.kl_div(log_p, soft_targets.reshape(-1, logits.shape[-1])[keep], log_target=True,
                      reduction="batchmean") * temperature ** 2
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100)
        return kl_weight * kl + (1 - kl_weight) * ce, {"kl": kl.detach(), "ce": ce.detach()}

    return loss_fn


def train(spec: Spec, log) -> dict | None:
    """The loop's entry (this process, or every torchrun worker)."""
    from pipeline.core.tokens import TokenData
    from pipeline.core.train import evaluation, precision
    from pipeline.core.train.batches import WindowSampler, eval_starts, micro_batch_start
    from pipeline.core.train.config import Config as TrainConfig
    from pipeline.model import Transformer
    from pipeline.model.io import load_model, save_weights

    c = spec.config
    tc = TrainConfig(**c["train"]).validate()
    with session(tc, log) as (d, device):
        teacher = load_model(spec.inputs["model"], device).requires_grad_(False)
        data = TokenData(spec.inputs["tokens"])
        torch.manual_seed(c["seed"])
        student = Transformer(student_config(teacher.cfg, c["student"])).to(device)
        picks = init_from_teacher(student, teacher) if c["student_init"] == "teacher_layers" else None
        seq_len = min(tc.seq_len or student.cfg.max_seq_len, student.cfg.max_seq_len, teacher.cfg.max_seq_len)
        try:
            sampler = WindowSampler(data.train, seq_len, c["seed"])
            val_starts = eval_starts(len(data.val), seq_len, tc.eval_batches * tc.global_batch())
        except ValueError as err:
            raise StageError(f"compress (distill): {spec.inputs['tokens']}: {err}") from None
        autocast = precision.resolve(tc.precision, device).autocast

        def batches(step):
            return (sampler.batch(micro_batch_start(step, micro, d.rank, tc), tc.batch_size)
                    for micro in range(tc.grad_accum))

        def validate(wrapped):
            nats, n = evaluation.loss_sums(wrapped, data.val, val_starts, seq_len, tc.batch_size, autocast,
                                           device, d.rank, d.world_size)
            return {"val_loss": nats / max(n, 1)}

        def finish(run):
            save_weights(run.weights, Path(spec.out_dir) / STUDENT_WEIGHTS)
            return {**run.stats, "teacher_blocks_copied": picks, "seq_len": seq_len}

        job = Job(name="distill", model=student, loss=kd_loss(teacher, c["temperature"], c["kl_weight"]),
                  batches=batches, validate=validate, finish=finish, tokens_per_step=tc.global_batch() * seq_len,
                  flops_per_token=student.flops_per_token(seq_len))
        return fit(job, tc, d, device, Path(spec.ckpt_dir), log)


def distill(teacher, cfg, inputs: dict[str, Path], out: Path, log):
    """Train the student (the loop's run: in process or torchrun) -> (student, training stats)."""
    from pipeline.core.train import loop
    from pipeline.model import Transformer
    from pipeline.model.io import load_state_strict, load_weights

    if not inputs.get("tokens"):
        raise StageError("compress.methods: distill trains on the tokenize directory's text: wire the 'tokens' input")
    config = {"train": dataclasses.asdict(cfg.train), "student": dict(cfg.student), "seed": cfg.seed,
              "student_init": cfg.student_init, "temperature": cfg.temperature, "kl_weight": cfg.kl_weight}
    ckpt = loop.checkpoint_dir(out)
    spec = Spec(entry=ENTRY, config=config, inputs={k: str(v) for k, v in inputs.items()}, out_dir=str(out),
                ckpt_dir=str(ckpt))
    stats = loop.run(spec, cfg.train, log)
    student = Transformer(student_config(teacher.cfg, dict(cfg.student)))
    weights = out / STUDENT_WEIGHTS
    load_state_strict(student, load_weights(weights), weights)
    weights.unlink()
    loop.publish_run_files(ckpt, out)
    import shutil

    shutil.rmtree(ckpt, ignore_errors=True)  # the finished run's state is in out/ now
    return student.eval(), stats
