"""Entropy coding of .vat tokens with the generator as the prior.

The generator's unconditional pass (the null condition, no guidance) gives, scale by scale, a distribution
over every token of the next scale given the scales before it: exactly what a coder needs. The tokens are
range-coded (PyPI `constriction`) with those probabilities, quantised to integers first.

Decoding must see bit for bit the probabilities the encoder saw, so both ends compute them the same way:
- the pass runs as kv-cache sampling runs (NextScaleGPT.generate with `choose`): the encoder feeds the known
  tokens of each scale, the decoder the tokens it has just decoded; the same operations in the same order;
- on the CPU, in float32, with autocast off and one thread (the sum orders of a matrix product may change
  with the number of threads), on a float32 CPU copy of the generator and of the tokenizer's quantiser,
  whatever device or precision the caller's models use;
- the softmax in float64 (numpy) and the probabilities floored to integers summing to at most
  PROBABILITY_TOTAL, at least 1 each (every token stays codable).
A file decodes where these computations give the same float32 numbers as where it was encoded: the same
checkpoint folder and the same machine and software (torch, numpy) certainly; another CPU kind or torch build
may round differently, and then the file's checksum (which covers the decoded tokens) says so instead of
giving other tokens. Raw files (`vat encode --raw`) decode anywhere.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json

import numpy as np
import torch

# Quantised probabilities of one token sum to at most this (each at least 1: a token the prior rules out
# costs 16 bits, and the floor leaves 1,024 / 2^16 of the mass to such tokens with 1,024 codes).
PROBABILITY_TOTAL = 1 << 16
CODER = b"vat-entropy-1 constriction range coder, Categorical(perfect=False)"


def quantized_probabilities(logits_lV: torch.Tensor, total: int = PROBABILITY_TOTAL) -> np.ndarray:
    """float64 [l, V] of whole numbers >= 1 summing to at most `total` per row: softmax in float64 of the
    float32 logits, floored."""
    x = logits_lV.detach().to("cpu", torch.float32).numpy().astype(np.float64)
    vocabulary = x.shape[1]
    if total < 2 * vocabulary:
        raise ValueError(f"a total of {total} leaves too little for {vocabulary} symbols")
    x = np.exp(x - x.max(axis=1, keepdims=True))
    p = x / x.sum(axis=1, keepdims=True)
    return np.floor(p * (total - vocabulary)) + 1.0


@contextlib.contextmanager
def deterministic_cpu():
    """One CPU thread, no autocast, no gradients, for the duration (the caller's thread count is restored)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.set_num_threads(threads)


def _model():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


class GeneratorPrior:
    """A TokenPrior (vat.codec) from a NextScaleGPT and the tokenizer's quantiser: see the module's text."""

    def __init__(self, generator, quantizer, total: int = PROBABILITY_TOTAL):
        self.generator = copy.deepcopy(generator).to("cpu", torch.float32).eval()
        self.quantizer = copy.deepcopy(quantizer).to("cpu", torch.float32).eval()
        self.total = total
        self.fingerprint = prior_fingerprint(self.generator, self.quantizer, total)

    def _probabilities(self, scales: int, pick) -> list[np.ndarray]:
        """The quantised probabilities of scales 1..`scales`, each scale's tokens given by pick(si, counts)
        (the known tokens, or those decoded with counts)."""
        counts = []

        class Done(Exception):
            pass

        def choose(si: int, logits_BlV: torch.Tensor) -> torch.Tensor:
            counts.append(quantized_probabilities(logits_BlV[0], self.total))
            idx = torch.as_tensor(np.asarray(pick(si, counts[-1]), dtype=np.int64))[None]
            if si + 1 == scales:
                raise Done  # the remaining scales are not needed
            return idx

        with deterministic_cpu():
            try:
                self.generator.generate(self.quantizer, cfg=0.0, choose=choose)
            except Done:
                pass
        return counts

    def probabilities(self, indices: list[np.ndarray]) -> list[np.ndarray]:
        """The quantised probabilities of each scale of `indices` given the scales before it."""
        return self._probabilities(len(indices), lambda si, _: indices[si])

    def bits(self, indices: list[np.ndarray]) -> list[float]:
        """Information content of each scale's tokens under the quantised prior (bits per token; the coder
        adds at most a few bytes per file)."""
        out = []
        for idx, counts in zip(indices, self.probabilities(indices)):
            chosen = counts[np.arange(len(idx)), np.asarray(idx)]
            out.append(float(np.mean(np.log2(counts.sum(axis=1)) - np.log2(chosen))))
        return out

    def encode(self, indices: list[np.ndarray]) -> bytes:
        import constriction

        encoder = constriction.stream.queue.RangeEncoder()
        for idx, counts in zip(indices, self.probabilities(indices)):
            encoder.encode(np.asarray(idx, dtype=np.int32), _model(), counts)
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, scales: int) -> list[np.ndarray]:
        import constriction

        if len(payload) % 4:
            raise ValueError(f"an entropy-coded payload is whole 32-bit words, got {len(payload)} bytes")
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        decoded = []

        def pick(si: int, counts: np.ndarray) -> np.ndarray:
            decoded.append(np.asarray(decoder.decode(_model(), counts), dtype=np.int64))
            return decoded[-1]

        self._probabilities(scales, pick)
        return decoded


def prior_fingerprint(generator, quantizer, total: int = PROBABILITY_TOTAL) -> bytes:
    """4 bytes that identify the prior: the coder, the probability total, the generator's config and weights,
    and the quantiser's weights (its codebook and up-sampling make the generator's next-scale inputs)."""
    digest = hashlib.sha256(CODER + str(total).encode())
    digest.update(json.dumps(generator.config.to_dict(), sort_keys=True).encode())
    for module in (generator, quantizer):
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to("cpu", torch.float16).numpy().tobytes())
    return digest.digest()[:4]

