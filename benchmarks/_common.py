"""Shared helpers for the benchmarks: a GPT-2-small-sized random model with a locally trained tokenizer."""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolens_lightning.concepts import Concept, load_concept  # noqa: E402


def local_bpe_tokenizer(texts: list[str], vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained here with `tokenizers` (no hub), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    return fast


def concept_texts(concept: Concept) -> list[str]:
    out = [e.text for e in concept.positive + concept.negative]
    out += [t.prompt + t.target for t in concept.tasks]
    return out


def gpt2_small_random(seed: int = 0, device: str | None = None):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config())  # 12 layers x 3072 MLP units, 124M parameters
    model.eval()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.to(dev)


def replicate(concept: Concept, times: int, drop_tasks: bool = False) -> Concept:
    from dataclasses import replace

    return replace(concept, positive=concept.positive * times, negative=concept.negative * times,
                   positive_groups=concept.positive_groups * times, tasks=[] if drop_tasks else concept.tasks)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _status_kb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


def reset_peak_rss() -> float:
    """Reset the kernel's RSS high-water mark (Linux) and return the current RSS in MiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kb("VmRSS") / 1024.0


def peak_rss_since_reset_mb() -> float:
    return _status_kb("VmHWM") / 1024.0


def timed(fn, repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def base_concept(name: str = "royalty") -> Concept:
    return load_concept(name)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
