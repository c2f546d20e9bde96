"""The batches of a pre-training objective (objectives.py says which) and the loss on them.

Each objective turns a window of the token stream into (source, target) (pipeline/model/
objectives.py): a decoder reads source + target with the source as its prefix (``prefix_len``
per row, the attention kernel's per-batch prefix), an encoder-decoder reads the source in its
encoder. Both are scored on the target tokens only, so validation loss and bits-per-byte
measure the text each model predicts. A row is a pure function of (seed, sample index), as
the windows are (batches.py): a resumed run reads exactly what the uninterrupted one did.

    batches = ObjectiveBatches(tc, seq_len, seed, sentinel_ids, pad_id, encoder_decoder=False)
    batch = batches.train_batch(sampler, first_sample, batch_size)   # {"idx", "targets", "prefix_len"}
    loss = batches.loss(prefix_attention=True)(model, batch)
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.core.errors import StageError
from pipeline.core.train.objectives import Denoiser, mixture
from pipeline.model import objectives as O

TRAIN_STREAM, VAL_STREAM = 0, 1  # separate random streams: validation never repeats a training draw


def _generator(seed: int, stream: int, index: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, stream, int(index)]).generate_state(2, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


class ObjectiveBatches:
    """The batches of one objective over windows of ``seq_len + 1`` tokens.

    ``encoder_decoder`` picks the layout; ``sentinels`` are the tokenizer's sentinel ids and
    ``pad_id`` fills rows shorter than the longest (targets there are -100)."""

    def __init__(self, tc, seq_len: int, seed: int, sentinels: list[int], pad_id: int | None,
                 encoder_decoder: bool):
        self.seq_len, self.seed, self.sentinels, self.pad_id = seq_len, seed, list(sentinels), pad_id
        self.encoder_decoder, self.objective = encoder_decoder, tc.objective
        self.mix = mixture(tc)
        self.cumulative = np.cumsum([p for p, _ in self.mix])
        # raw tokens per window for each span denoiser: a search over lengths, done once
        self.raw = {d: O.raw_length(seq_len, d.noise_density, d.mean_span_length) for _, d in self.mix if d.kind == "spans"}
        self._check()

    def _check(self) -> None:
        if self.pad_id is None:
            raise StageError(f"train.objective={self.objective}: the tokenizer has no pad token to fill short rows")
        for _, d in self.mix:
            if d.kind != "spans":
                continue
            spans = O.span_counts(self.raw[d], d.noise_density, d.mean_span_length)[1]
            if spans > len(self.sentinels):
                raise StageError(
                    f"train.objective={self.objective}: a {self.seq_len}-token sequence hides {spans} spans "
                    f"(noise {d.noise_density}, mean span {d.mean_span_length}) but the tokenizer has "
                    f"{len(self.sentinels)} sentinels: raise tokenize.n_sentinels to {spans} or more, or "
                    f"shorten train.seq_len")

    def mean_lengths(self) -> list[tuple[float, float, float]]:
        """(probability, mean source length, mean target length) of each denoiser."""
        out = []
        for p, d in self.mix:
            if d.kind == "spans":
                n = self.raw[d]
                noise, spans = O.span_counts(n, d.noise_density, d.mean_span_length)
                out.append((p, n - noise + spans, noise + spans))
            else:  # lm: one token read; prefix: the split is uniform over the window
                n = self.seq_len + 1
                out.append((p, 1.0, n - 1.0) if d.kind == "lm" else (p, n / 2, n / 2))
        return out

    def denoiser(self, generator: torch.Generator) -> Denoiser:
        """A denoiser drawn at the mixture's rates (the only one when there is one)."""
        pick = int(np.searchsorted(self.cumulative, float(torch.rand(1, generator=generator)), side="right"))
        return self.mix[min(pick, len(self.mix) - 1)][1]

    def pair(self, window: np.ndarray, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, target) of one window of seq_len + 1 tokens."""
        d = self.denoiser(generator)
        tokens = torch.from_numpy(np.asarray(window, dtype=np.int64))
        if d.kind == "lm":
            return tokens[:1], tokens[1:]
        if d.kind == "prefix":
            return O.split_prefix(tokens, generator)
        return O.corrupt_spans(tokens[:self.raw[d]], self.sentinels, d.noise_density, d.mean_span_length, generator)

    def batch(self, tokens: np.ndarray, starts, indices, stream: int) -> dict:
        """The laid-out batch of windows ``starts`` of ``tokens``; row i draws from the random
        stream (seed, ``stream``, ``indices[i]``)."""
        pairs = [self.pair(tokens[s:s + self.seq_len + 1], _generator(self.seed, stream, i))
                 for s, i in zip(starts, indices)]
        if self.encoder_decoder:
            return O.seq2seq_batch(pairs, self.pad_id)
        return O.decoder_batch(pairs, self.seq_len, self.pad_id)

    def train_batch(self, sampler, first: int, count: int) -> dict:
        """Global samples first .. first+count-1 of the training stream (a WindowSampler's)."""
        return self.batch(sampler.tokens, sampler.window_starts(first, count), range(first, first + count), TRAIN_STREAM)

    def val_batch(self, tokens: np.ndarray, starts) -> dict:
        """Validation windows: the corruption of a window depends on its offset only, so every
        validation (and every batch size) scores the same targets."""
        return self.batch(tokens, starts, starts, VAL_STREAM)

    def loss(self, prefix_attention: bool):
        """(model, batch) -> mean loss over the target tokens; a prefix decoder gets each row's
        source length as ``prefix_len`` (a causal one reads the same rows causally)."""

        def objective_loss(model, batch):
            if "enc" in batch:
                return model(batch["enc"], batch["dec"], batch["targets"], enc_mask=batch["enc_mask"])[1]
            return model(batch["idx"], batch["targets"], prefix_len=batch["prefix_len"] if prefix_attention else None)[1]

        return objective_loss
