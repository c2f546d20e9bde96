"""finetune: turn a model into a chat model — SFT, LoRA, DPO, a reward model, and RL against checkable answers or the reward model; optional safety tuning.

    python -m pipeline finetune in=results/pretrain/<key> out=sft/                    SFT on the generated tasks
    python -m pipeline finetune in=results/pretrain/<key> out=lora/ method=lora lora.rank=8
    python -m pipeline finetune in=results/pretrain/<key> out=prompt/ method=prompt virtual_tokens=16
    python -m pipeline finetune in=sft/ out=dpo/ method=dpo dpo.beta=0.1 safety.mix=0.2    + safety preferences
    python -m pipeline finetune in=sft/ out=rm/ method=reward
    python -m pipeline finetune in=sft/ out=rl/ method=rl                              GRPO on the tasks' answers
    python -m pipeline finetune in=base/ out=sft/ data=chats.jsonl safety.mix=0.2      your conversations

One step per method (``method``):

    sft      full fine-tuning on conversations (``messages``), loss on the assistant's tokens only
    lora     the same objective, training only low-rank adapters (peft); merged weights + the adapter
    prompt   the same objective, training only a soft prompt: virtual_tokens learned input embeddings
             before every conversation (prompt tuning, Lester et al. 2021)
    prefix   the same, training only virtual_tokens learned keys and values in every layer (prefix
             tuning, Li & Liang 2021; P-tuning v2); prompt and prefix models also write a peft adapter
             (lora, prompt and prefix also train the embedding rows of the tokens the data uses, as
             peft's trainable_token_indices: ``trainable_tokens``)
    dpo      direct preference optimisation on (prompt, chosen, rejected) against a frozen reference;
             dpo.rejected=policy puts the input model's own wrong replies in place of the rejected ones;
             safety.mix adds the built-in safety preferences (refuse harmful requests, answer look-alikes)
    reward   a scalar head on the model, Bradley-Terry loss on the same pairs
    rl       group-relative policy gradient (GRPO / nanochat's chat_rl) on sampled replies

Conversations are rendered with the chat template stored with the tokenizer (pipeline/core/chat.py).
Data (``data``): ``builtin`` (generated tasks with checkable answers, pipeline/core/tasks/generated.py;
passages of the ``tokens`` input for passage_qa when given), a local ``.jsonl``/``.parquet`` file,
or ``hf:NAME[:SPLIT]``. Bad records are set aside with a reason (stats ``dropped``).

Writes a model directory (pipeline/model/io.py: weights, config, tokenizer + chat template, hf/),
metrics.jsonl, and stats.json with the trainable parameters, losses, held-out exact match before and
after, DPO reward accuracy and margins, reward-model accuracy, the RL reward curve and refusal rates.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.core.errors import StageError
from pipeline.core.step import Input
from pipeline.core.tasks import generated
from pipeline.core.tasks.generated import TASKS
from pipeline.core.train.config import Config as TrainConfig
from pipeline.finetune.data import KIND

INPUTS = {
    "model": Input("a model directory (pipeline/model/io.py) to fine-tune"),
    "tokens": Input("a tokenize directory: passages of the curated corpus for the passage_qa task", optional=True),
    "reference": Input("DPO's frozen reference model directory (default: the input model)", optional=True),
    "reward": Input("a reward model (finetune method=reward) for method=rl with rl.reward=model", optional=True),
}
# The built-in data is made by the generators: their version is part of this stage's, so a change
# to them (new wrong answers, say) reruns the fine-tuning steps instead of keeping stale results.
VERSION = f"1+generated{generated.VERSION}"
METHODS = ("sft", "lora", "prompt", "prefix", "dpo", "reward", "rl")
# Peak learning rates when train.lr is 0: full fine-tuning at pretraining's (it decays); adapters,
# which start from zero, take about as large steps (at 5e-3 LoRA rose back to the base's loss on
# the cpu_2m base), and the few virtual tokens larger ones (prompt tuning's papers use 0.3 with
# Adafactor, peft's examples 3e-2 with AdamW); preference and RL steps stay small so the policy
# keeps near its start (DPO at 2e-4 pulled the chosen replies down with the rejected ones).
METHOD_LR = {"sft": 3e-3, "lora": 2e-3, "prompt": 1e-2, "prefix": 1e-2, "dpo": 5e-5, "reward": 1e-3, "rl": 1e-4}
# Optimizer steps when train.steps is 0: the supervised methods teach a chat format and tasks the
# base never saw (held-out exact match on the cpu_2m base, mean of the 5 tasks: 200 steps ~0, 1000
# steps SFT 0.23 / LoRA 0.18, 2000 steps SFT 0.70 / LoRA 0.78, ~250 s each on one CPU thread);
# preference and RL steps refine a model that answers already.
METHOD_STEPS = {"sft": 2000, "lora": 2000, "prompt": 2000, "prefix": 2000, "dpo": 200, "reward": 200, "rl": 60}


def _train_defaults() -> TrainConfig:
    # Fine-tuning: the method's steps and peak lr, a cosine decay after a short warmup (the last
    # steps settle), validation and checkpoints every 100 steps, no weight decay on a trained model.
    return TrainConfig(steps=0, batch_size=16, lr=0.0, warmup_steps=30, schedule="cosine",
                       weight_decay=0.0, eval_every=100, eval_batches=2, checkpoint_every=100, log_every=10)


@dataclass
class LoraConfig:
    rank: int = 16
    alpha: float = 32.0  # the update is scaled by alpha / rank
    dropout: float = 0.0
    # Every projection of attention and the MLP (QLoRA's finding: all linear layers matter).
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


@dataclass
class DpoConfig:
    beta: float = 0.1  # strength of the pull towards the reference (DPO paper, TRL's default)
    # Weight of the chosen replies' token NLL added to the loss (RPO; TRL's rpo_alpha, None/0 = off):
    # keeps DPO from lowering the chosen replies' likelihood with the rejected ones'.
    rpo_alpha: float = 0.0
    # given: the data's rejected replies | policy: the input model's own greedy reply wherever it
    # is not the chosen one (its real mistakes: on-policy negatives, as online DPO and iterative
    # RPO take them), the data's where the model already answers right.
    rejected: str = "given"


@dataclass
class RlConfig:
    reward: str = "task"  # task: 1 for a correct answer of a generated task | model: the reward model's score
    # Prompts per optimizer step: train.batch_size per micro-step and process, as for every method.
    group_size: int = 16  # replies sampled per prompt (nanochat chat_rl's num_samples); the baseline is their mean
    # group: advantage = (reward - group mean) / (group std + 1e-4), TRL GRPO's default, so a prompt the
    # policy mostly fails still pushes as hard as any other | none: reward - group mean (Dr. GRPO)
    scale_rewards: str = "group"
    max_new_tokens: int = 16
    # Below 1 the samples stay near what the policy answers greedily (what exact match scores); a
    # small model at 1.0 samples mostly malformed replies, which all score 0 and teach nothing.
    temperature: float = 0.7
    top_k: int = 0  # 0 = the whole vocabulary


@dataclass
class SafetyConfig:
    # Fraction of the training examples taken from the built-in safety set; 0 = off. SFT-style
    # methods get conversations (harmful requests refused, harmless look-alikes answered), dpo and
    # reward get preference pairs (the refusal over a willing reply, the answer over a refusal), and
    # their held-out preference scores then include the held-out safety pairs.
    mix: float = 0.0
    # Safety context distillation: the safety examples' replies are the input model's own,
    # generated with a safety system turn (pipeline/core/tasks/safety.py), and trained without it.
    context_distillation: bool = False


@dataclass
class Config:
    method: str = "sft"  # sft | lora | dpo | reward | rl
    # builtin | path/to/file.jsonl|.parquet (messages, or prompt/chosen/rejected) | hf:NAME[:SPLIT]
    data: str = "builtin"
    tasks: list[str] = field(default_factory=lambda: list(TASKS))  # builtin data: which generated tasks
    train_examples: int = 4000  # builtin: training examples over all tasks; files: at most this many (0 = all)
    heldout_examples: int = 50  # held-out problems per task scored before and after (0 = skip)
    packing: bool = False  # concatenate examples into full rows instead of padding each batch
    virtual_tokens: int = 16  # method=prompt|prefix: learned virtual tokens before every conversation
    # method=lora|prompt|prefix: embedding rows (tied with the head) trained beside the adapter.
    # chat: the special tokens the chat template writes (a base that never saw a chat has random
    # rows there and no way to predict the end-of-turn marker, so its replies never stop) |
    # data: those and every token of the training examples | none
    trainable_tokens: str = "data"
    seed: int = 1234
    train: TrainConfig = field(default_factory=_train_defaults)
    lora: LoraConfig = field(default_factory=LoraConfig)
    dpo: DpoConfig = field(default_factory=DpoConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    eval_max_new_tokens: int = 24  # greedy reply length when scoring held-out answers

    def __post_init__(self):
        for name, cls in _PARTS.items():  # plain dicts (torchrun workers read the config as JSON)
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        problems = []
        if self.method not in METHODS:
            problems.append(f"finetune.method must be one of {'|'.join(METHODS)}, got {self.method!r}")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            problems.append(f"finetune.tasks: unknown {unknown}; the generated tasks are {list(TASKS)}")
        if self.rl.reward not in ("task", "model"):
            problems.append(f"finetune.rl.reward must be task|model, got {self.rl.reward!r}")
        if self.trainable_tokens not in ("chat", "data", "none"):
            problems.append(f"finetune.trainable_tokens must be chat|data|none, got {self.trainable_tokens!r}")
        if self.rl.scale_rewards not in ("group", "none"):
            problems.append(f"finetune.rl.scale_rewards must be group|none, got {self.rl.scale_rewards!r}")
        if self.rl.temperature <= 0:
            problems.append(f"finetune.rl.temperature must be > 0 (replies are sampled), got {self.rl.temperature}")
        if self.rl.group_size < 2:
            problems.append(f"finetune.rl.group_size must be >= 2 (the baseline is the group mean), got {self.rl.group_size}")
        if not 0 <= self.safety.mix < 1:
            problems.append(f"finetune.safety.mix must be in [0, 1), got {self.safety.mix}")
        kind = KIND.get(self.method)  # what the method trains on: the safety set has conversations and pairs
        if self.safety.mix and kind not in ("conversation", "pair"):
            problems.append("finetune.safety.mix mixes safety conversations into SFT-style methods and safety "
                            "preference pairs into dpo/reward; method=rl trains on neither: drop it")
        if self.safety.context_distillation and (not self.safety.mix or kind != "conversation"):
            problems.append("finetune.safety.context_distillation rewrites the safety conversations' replies: it "
                            "needs safety.mix > 0 and a conversation method (sft|lora|prompt|prefix)")
        if self.dpo.rpo_alpha < 0:
            problems.append(f"finetune.dpo.rpo_alpha must be >= 0, got {self.dpo.rpo_alpha}")
        if self.dpo.rejected not in ("given", "policy"):
            problems.append(f"finetune.dpo.rejected must be given|policy, got {self.dpo.rejected!r}")
        if self.dpo.beta <= 0:
            problems.append(f"finetune.dpo.beta must be > 0, got {self.dpo.beta}")
        if self.method in ("prompt", "prefix") and self.virtual_tokens < 1:
            problems.append(f"finetune.virtual_tokens must be >= 1 for method={self.method}, got {self.virtual_tokens}")
        if self.lora.rank < 1:
            problems.append(f"finetune.lora.rank must be >= 1, got {self.lora.rank}")
        if problems:
            raise StageError("; ".join(problems))

    def training(self) -> TrainConfig:
        """The training recipe, with the method's steps and learning rate where train.steps / train.lr are 0."""
        import dataclasses

        return dataclasses.replace(self.train, steps=self.train.steps or METHOD_STEPS[self.method],
                                   lr=self.train.lr or METHOD_LR[self.method]).validate()


_PARTS = {"train": TrainConfig, "lora": LoraConfig, "dpo": DpoConfig,
          "rl": RlConfig, "safety": SafetyConfig}


def run(cfg: Config, inputs: dict[str, Path], out: Path, log) -> dict:
    import shutil

    from pipeline.core.train import loop

    tc = cfg.training()
    if cfg.method == "rl" and cfg.rl.reward == "model" and not inputs.get("reward"):
        raise StageError("finetune.method=rl with rl.reward=model needs a `reward` input (a finetune method=reward step)")
    ckpt = loop.checkpoint_dir(out)
    spec = loop.Spec(entry="pipeline.finetune.train:train", config=asdict(cfg),
                     inputs={k: str(v) for k, v in inputs.items() if v}, out_dir=str(out), ckpt_dir=str(ckpt))
    stats = loop.run(spec, tc, log)
    shutil.rmtree(ckpt, ignore_errors=True)  # the finished run's state is in out/ now
    return stats
