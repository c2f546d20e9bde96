"""pretrain: train the model on the tokenized corpus (next-token prediction, or train.objective).

    python -m pipeline pretrain                              the composed config, as the DAG runs it
    python -m pipeline pretrain in=results/tokenize/<key> out=my_model/ train.steps=200
    python -m pipeline pretrain model.attention=prefix train.objective=prefix_lm
    python -m pipeline pretrain model.arch=encoder_decoder model.pos_emb=relative train.objective=span_corruption
    python -m pipeline pretrain train.nproc=2                two processes (torchrun, DDP)
    python -m pipeline pretrain train.strategy=fsdp train.nproc=4 train.precision=bf16

Writes model.safetensors, model_config.json, tokenizer.json, metrics.jsonl, samples.txt,
train_state.pt (to continue training), hf/ (a transformers checkpoint: Llama/Qwen3, or T5 for
the encoder-decoder) and stats.json with tokens/s, MFU, final losses, and validation
bits-per-byte beside a unigram model's, both on the tokens the objective predicts.

A killed run resumes: checkpoints live in ``.ckpt-<key>/`` next to the stage directory, and
rerunning the same key continues from the newest one, step for step as if never stopped.
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from pipeline.core.errors import StageError
from pipeline.core.step import Input
from pipeline.core.train.config import Config as TrainConfig
from pipeline.core.train.objectives import combination_problems, objective_problems
from pipeline.model import Config as ModelConfig

INPUTS = {"tokens": Input("a tokenize directory: train/val token files and the tokenizer")}
VERSION = "1"


@dataclass
class Config:
    # The DAG gives the step the top-level `model` and `train` groups (conf/dag/default.yaml:
    # config: {model: ${model}, train: ${train}}), so both land in its key.
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 1234  # weights init and data order
    # Validation windows scored at the end (spread over val; 0 = all of it).
    final_eval_windows: int = 512
    # Samples at the end: one per prompt, seeded; top-k sampling (GPT-2's samples used k=40).
    prompts: list[str] = field(default_factory=lambda: [
        "The", "Once upon a time", "In the beginning", "The history of", "def main():"])
    sample_tokens: int = 64
    sample_temperature: float = 0.8
    sample_top_k: int = 40

    def __post_init__(self):
        # What the model and objective cannot honour together fails when the DAG is planned
        # (the step's key types this config), not after training.
        model, train = self._parts()
        problems = objective_problems(train) + combination_problems(model, train)
        try:
            model.validate()
        except ValueError as err:
            problems.append(str(err))
        if model.pos_emb == "sinusoidal":
            problems.append("model.pos_emb=sinusoidal: pretrain writes a transformers export (hf/) and no "
                            "transformers class holds sinusoidal positions with these blocks: use model.pos_emb=rope")
        if problems:
            raise StageError("pretrain: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return cls(**d).typed()

    def _parts(self) -> tuple[ModelConfig, TrainConfig]:
        model = self.model if isinstance(self.model, ModelConfig) else ModelConfig(**(self.model or {}))
        train = self.train if isinstance(self.train, TrainConfig) else TrainConfig(**(self.train or {}))
        return model, train

    def typed(self) -> "Config":
        """model/train as their dataclasses (stages receive plain dicts; an empty one means
        the defaults), in a copy: OmegaConf builds the schema through __init__ and must see
        them untyped."""
        model, train = self._parts()
        return dataclasses.replace(self, model=model, train=train)


def resources(cfg: Config) -> dict:
    """What the Snakemake job asks for: one node's training processes, or every node of a
    multi-node run (the job's srun starts torchrun on each)."""
    return cfg.typed().train.job_resources()


def run(cfg: Config, inputs: dict[str, Path], out: Path, log) -> dict:
    from pipeline.core.train import loop

    cfg = cfg.typed()
    cfg.train.validate()
    ckpt = loop.checkpoint_dir(out)
    spec = loop.Spec(entry="pipeline.pretrain.loop:train", config=asdict(cfg),
                     inputs={"tokens": str(inputs["tokens"])}, out_dir=str(out), ckpt_dir=str(ckpt))
    stats = loop.run(spec, cfg.train, log)
    shutil.rmtree(ckpt, ignore_errors=True)  # the finished run's state is in out/ now
    return stats
