"""The ``generate`` and ``serve`` commands: key=value words, as the rest of lmdag.

    python -m pipeline generate model=DIR prompt="Once upon a time" [max_tokens=64 temperature=0.8
        top_k=40 top_p=0.95 seed=0 stop="." stream=true chat=true system="..." device_budget_mb=1]
    python -m pipeline serve model=DIR [port=8000 host=127.0.0.1 name=NAME max_batch=32 compile=false]

``compile=true`` (CPU) compiles the decode step: the first steps take tens of seconds, later
ones less than eager ones (benchmarks/generate.py on cpu_2m, batch 16: 1.77x HF generate
compiled, 1.30x eager), so it pays off in a server or a long batch, not in a one-off prompt:
``serve`` compiles by default, ``generate`` does not. On a GPU (the Triton kernels) there is
nothing to compile and the setting is ignored with a warning.

``prompt`` and ``stop`` may be given several times (several prompts are batched together).
With ``chat=true`` the prompt is the user's message, rendered with the model's chat template.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.errors import StageError
from pipeline.core.inference.engine import EngineConfig

log = logging.getLogger("lmdag.inference")


@dataclass
class EngineArgs:
    model: str = ""  # a model directory (pipeline/model/io.py)
    device: str = "cpu"
    kernels: str = "auto"  # auto | triton | torch
    block_size: int = 16
    max_batch: int = 32
    kv_cache_tokens: int = 0  # 0 = max_batch full contexts
    device_budget_mb: float = 0.0  # weights kept on the device; the rest streamed in per layer (0 = all)
    compile: bool = False  # decode steps through torch.compile (CPU): slow first steps, faster after

    def engine(self):
        from pipeline.core.inference.engine import Engine

        if not self.model:
            raise StageError("model=DIR is required: a model directory (pretrain, finetune or compress output)")
        compile = self.compile
        if compile and (self.device != "cpu" or self.kernels == "triton" or self.device_budget_mb):
            log.warning("compile=true compiles the CPU decode step with the kernels' PyTorch references and all "
                        "weights resident; with device=%s kernels=%s device_budget_mb=%s it decodes eagerly",
                        self.device, self.kernels, self.device_budget_mb)
            compile = False
        try:
            cfg = EngineConfig(block_size=self.block_size, max_batch=self.max_batch, kv_cache_tokens=self.kv_cache_tokens,
                               device=self.device, device_budget_mb=self.device_budget_mb, compile=compile)
        except ValueError as err:
            raise StageError(f"bad engine setting: {err}") from None
        return Engine.from_dir(self.model, cfg, kernels=self.kernels)


@dataclass
class GenerateArgs(EngineArgs):
    prompt: list[str] = field(default_factory=list)
    max_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    chat: bool = False  # the prompt is a user message, rendered with the model's chat template
    system: str = ""  # with chat=true: a system message before it


@dataclass
class ServeArgs(EngineArgs):
    host: str = "127.0.0.1"  # loopback only unless asked: the server has no authentication
    port: int = 8000
    name: str = ""  # the model id clients send; default: the model directory's name
    compile: bool = True  # a server decodes for long: the compiled step's start-up cost pays off


def _convert(name: str, kind, text: str):
    kind = {"int | None": int, "float": float, "int": int, "bool": bool, "str": str}.get(str(kind), kind)
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise StageError(f"{name}={text!r}: expected true or false")
        return text.lower() in ("true", "1", "yes")
    try:
        return kind(text)
    except ValueError:
        raise StageError(f"{name}={text!r}: expected {kind.__name__}") from None


def parse(argv: list[str], cls):
    """key=value words into ``cls``; list fields collect repeated keys. Text stays text
    (prompt=yes is the prompt "yes"), so values are converted by the field's declared type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict = {}
    for word in argv:
        key, eq, text = word.partition("=")
        if not eq or key not in fields:
            raise StageError(f"unknown argument {word!r}; expected key=value with key one of: {', '.join(fields)}")
        kind = fields[key].type
        if str(kind).startswith("list"):
            values.setdefault(key, []).append(text)
        else:
            values[key] = _convert(key, kind, text)
    return cls(**values)


def _print_usage(argv) -> bool:
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__.strip())
        return True
    return False


def _chat_prompt(engine, args: GenerateArgs, user: str) -> list[int]:
    from pipeline.core.chat import find_template
    from pipeline.core.inference.chat import render_chat

    template = find_template(args.model)
    if template is None:
        raise StageError(f"{args.model}: chat=true, but the model has no chat template "
                         "(chat_template.jinja or tokenizer_config.json; fine-tuning adds one)")
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [{"role": "user", "content": user}]
    text = render_chat(template, messages, engine.special_token_strings)
    return engine.encode(text, special=False)


def generate_main(argv: list[str]) -> int:
    from pipeline.core.inference.sampling import SamplingParams

    if _print_usage(argv):
        return 0
    args = parse(argv, GenerateArgs)
    if not args.prompt:
        raise StageError('prompt="..." is required')
    if args.stream and len(args.prompt) > 1:
        raise StageError("stream=true prints one completion as it is made: give one prompt")
    if args.system and not args.chat:
        raise StageError("system=... is a chat message: add chat=true")
    try:
        params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                                top_p=args.top_p, seed=args.seed, stop=args.stop)
    except ValueError as err:
        raise StageError(f"generate: {err}") from None
    engine = args.engine()
    prompts = [_chat_prompt(engine, args, p) for p in args.prompt] if args.chat else args.prompt
    if args.chat:
        params.stop_token_ids = list(engine.chat_stop_ids)
    try:
        if args.stream:
            if not args.chat:
                print(args.prompt[0], end="", flush=True)
            for delta in engine.stream(prompts[0], params):
                print(delta.text, end="", flush=True)
            print()
            return 0
        for i, (prompt, out) in enumerate(zip(args.prompt, engine.generate(prompts, params))):
            print(("" if i == 0 else "\n") + ("" if args.chat else prompt) + out.text)
    except ValueError as err:
        raise StageError(f"generate: {err}") from None
    return 0


def serve_main(argv: list[str]) -> int:
    from pipeline.core.chat import find_template
    from pipeline.core.inference.server import Server

    if _print_usage(argv):
        return 0
    args = parse(argv, ServeArgs)
    engine = args.engine()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    name = args.name or Path(args.model).resolve().name
    try:
        server = Server(engine, name, args.host, args.port, find_template(args.model),
                        engine.special_token_strings, engine.chat_stop_ids)
    except OSError as err:
        raise StageError(f"serve: cannot listen on {args.host}:{args.port} ({err.strerror}); pick another port=") from None
    print(f"serving {name} on {server.url}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.loop.stop()
    return 0


def main(argv: list[str]) -> int:
    """``python -m pipeline.core.inference.cli generate|serve key=value ...``"""
    commands = {"generate": generate_main, "serve": serve_main}
    if not argv or argv[0] not in commands:
        print(__doc__.strip())
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    try:
        return commands[argv[0]](argv[1:])
    except StageError as err:
        print(f"lmdag error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
