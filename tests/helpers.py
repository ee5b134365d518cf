"""Reusable builders for tests: local tokenizers and tiny random transformers (no network).

Everything here is built locally with the ``tokenizers`` library and random-init configs,
so tests never touch the Hugging Face hub.

* :func:`make_word_tokenizer` - a fast tokenizer (``PreTrainedTokenizerFast``) whose
  vocabulary holds every word of the built-in text probes (+ common words + the given
  ``words``) as single tokens, with a character fallback so nothing becomes ``[UNK]``.
  ``kind`` is ``"gpt2"`` (byte-level, no special tokens added, ``<|endoftext|>`` = eos = pad),
  ``"bert"`` (``[CLS] x [SEP]``, ``[PAD]/[UNK]/[MASK]``) or ``"roberta"`` (``<s> x </s>``,
  ``<pad>``, ``<mask>``, byte-level).
* :func:`tiny_gpt2`, :func:`tiny_bert`, :func:`tiny_bert_encoder`, :func:`tiny_roberta` -
  random-init models sized to the tokenizer, in eval mode.
* :func:`small_probe_dict` - a small valid probe with 3 groups, spans and tasks.
"""

from __future__ import annotations

import random
import string
from functools import lru_cache
from typing import Any, Iterable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import (BertConfig, BertForMaskedLM, BertModel, GPT2Config, GPT2LMHeadModel,
                          PreTrainedTokenizerFast, RobertaConfig, RobertaForMaskedLM)

TEXT_CONCEPTS = ("royalty", "negation", "past_tense", "plural")

COMMON_WORDS = """
the a an and or but if then else of to in on at by for with from as is are was were be been being am do does did
done have has had having not no yes it its this that these those there here he she they we you i me him her them us
my your his our their what which who whom whose when where why how all any some many much more most few less very
can could will would shall should may might must one two three four five six seven eight nine ten first last next
new old young good bad big small long short great little man woman men women boy girl child children people person
day night year time week morning evening home house city village country world hand eye head king queen prince
princess throne crown farmer baker teacher doctor sailor soldier dog cat bird horse tree river road door room table
sat sits sit spoke speak said say says went go goes came come saw see looked look walked walk ran run ate eat gave
give took take made make found find told tell knew know thought think felt feel left leave kept keep stood stand
red blue green yellow black white circle square striped stripe image picture photo
""".split()

PUNCT = list(".,!?;:'\"()-")


@lru_cache(maxsize=None)
def _builtin_probe_texts() -> tuple[str, ...]:
    """Every text (with span marks removed) and task prompt/target of the built-in text concepts."""
    from neurolens_lightning.concepts import TextExample, TextTask, load_concept

    texts: list[str] = []
    for name in TEXT_CONCEPTS:
        c = load_concept(name)
        for ex in list(c.positive) + list(c.negative):
            if isinstance(ex, TextExample):
                texts.append(ex.text)
        for t in c.tasks:
            if isinstance(t, TextTask):
                texts += [t.prompt, t.target, t.prompt + t.target]
    return tuple(texts)


def _words_for(kind: str, texts: Iterable[str], normalizer, pre_tok) -> list[str]:
    """The pre-tokenized words of ``texts`` as the model vocabulary should hold them."""
    seen: dict[str, None] = {}
    for text in texts:
        for word, _ in pre_tok.pre_tokenize_str(normalizer.normalize_str(text)):
            seen.setdefault(word, None)
            if kind in ("gpt2", "roberta"):
                # make both the word-initial ("Ġking") and sentence-initial ("king") forms single tokens
                seen.setdefault(word[1:] if word.startswith("\u0120") else "\u0120" + word, None)
    return list(seen)


def make_word_tokenizer(kind: str, words: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """A local fast tokenizer of the given ``kind`` (``gpt2`` | ``bert`` | ``roberta``).

    The vocabulary holds, as single tokens: the words of the built-in text concept probes and
    their tasks, a list of common words, and ``words``; anything else falls back to single
    characters (WordPiece ``##`` continuation), so no input is an ``[UNK]`` flood. Lowercasing
    normalizer. Offsets and special-token masks work as for the real tokenizers.
    """
    if kind not in ("gpt2", "bert", "roberta"):
        raise ValueError(f"kind must be gpt2, bert or roberta, got {kind!r}")
    normalizer = normalizers.Lowercase()
    texts = list(_builtin_probe_texts()) + [" ".join(COMMON_WORDS), " ".join(words), " ".join(PUNCT)]
    texts += [" " + w for w in words]
    if kind == "bert":
        pre_tok = pre_tokenizers.BertPreTokenizer()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        chars = list(string.ascii_lowercase + string.digits + string.punctuation)
        unk = "[UNK]"
    else:
        pre_tok = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        specials = ["<|endoftext|>", "<unk>"] if kind == "gpt2" else ["<s>", "<pad>", "</s>", "<unk>"]
        chars = sorted(pre_tokenizers.ByteLevel.alphabet())
        unk = "<unk>"
    vocab_list: list[str] = list(specials)
    for tok in chars + ["##" + c for c in chars] + _words_for(kind, texts, normalizer, pre_tok):
        if tok not in vocab_list:
            vocab_list.append(tok)
    if kind == "roberta":
        vocab_list.append("<mask>")  # like RoBERTa: the mask token is the last id
    vocab = {t: i for i, t in enumerate(dict.fromkeys(vocab_list))}

    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token=unk, continuing_subword_prefix="##",
                                         max_input_chars_per_word=100))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tok
    if kind == "bert":
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
        backend.decoder = decoders.WordPiece(prefix="##")
        tok = _BertLikeTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    elif kind == "roberta":
        backend.post_processor = processors.RobertaProcessing(("</s>", vocab["</s>"]), ("<s>", vocab["<s>"]),
                                                              trim_offsets=True, add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        tok = _RobertaLikeTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
                                        mask_token="<mask>")
    else:
        backend.post_processor = processors.ByteLevel(trim_offsets=True)
        backend.decoder = decoders.ByteLevel()
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>",
                                      eos_token="<|endoftext|>", unk_token="<unk>", pad_token="<|endoftext|>")
    tok.model_max_length = 512
    return tok


class _BertLikeTokenizerFast(PreTrainedTokenizerFast):
    """Adds the BERT-style (transformers 4) ``build_inputs_with_special_tokens`` and
    ``get_special_tokens_mask`` on unformatted ids, which transformers 5 fast tokenizers lack."""

    _double_sep = False

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None
                                         ) -> list[int]:
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        if token_ids_1 is None:
            return cls + list(token_ids_0) + sep
        mid = sep + sep if self._double_sep else sep
        return cls + list(token_ids_0) + mid + list(token_ids_1) + sep

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1: list[int] | None = None,
                                already_has_special_tokens: bool = False) -> list[int]:
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        if token_ids_1 is None:
            return [1] + [0] * len(token_ids_0) + [1]
        mid = [1, 1] if self._double_sep else [1]
        return [1] + [0] * len(token_ids_0) + mid + [0] * len(token_ids_1) + [1]


class _RobertaLikeTokenizerFast(_BertLikeTokenizerFast):
    _double_sep = True


# ----------------------------------------------------------------------------- tiny models


def tiny_gpt2(tokenizer, n_layer: int = 2, n_embd: int = 32, n_head: int = 2, seed: int = 0,
              n_positions: int = 128) -> GPT2LMHeadModel:
    """A random-init GPT-2 LM (tied wte / lm_head) with the tokenizer's vocabulary, in eval mode."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                     n_head=n_head, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                     pad_token_id=tokenizer.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def _bert_config(tokenizer, n_layer: int, hidden: int, n_head: int, intermediate: int | None,
                 max_len: int) -> BertConfig:
    return BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=n_layer,
                      num_attention_heads=n_head, intermediate_size=intermediate or 4 * hidden,
                      max_position_embeddings=max_len, pad_token_id=tokenizer.pad_token_id,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_bert(tokenizer, n_layer: int = 2, hidden: int = 32, n_head: int = 2, intermediate: int | None = None,
              seed: int = 0, max_len: int = 128) -> BertForMaskedLM:
    """A random-init ``BertForMaskedLM`` (decoder tied to the word embeddings), in eval mode."""
    torch.manual_seed(seed)
    return BertForMaskedLM(_bert_config(tokenizer, n_layer, hidden, n_head, intermediate, max_len)).eval()


def tiny_bert_encoder(tokenizer, n_layer: int = 2, hidden: int = 32, n_head: int = 2,
                      intermediate: int | None = None, seed: int = 0, max_len: int = 128) -> BertModel:
    """A random-init ``BertModel`` (no head), in eval mode."""
    torch.manual_seed(seed)
    return BertModel(_bert_config(tokenizer, n_layer, hidden, n_head, intermediate, max_len)).eval()


def tiny_roberta(tokenizer, n_layer: int = 2, hidden: int = 32, n_head: int = 2, intermediate: int | None = None,
                 seed: int = 0, max_len: int = 128) -> RobertaForMaskedLM:
    """A random-init ``RobertaForMaskedLM``; positions are offset by pad_token_id + 1, hence max_len + 2."""
    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=n_layer,
                        num_attention_heads=n_head, intermediate_size=intermediate or 4 * hidden,
                        max_position_embeddings=max_len + 2, type_vocab_size=1,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5)
    return RobertaForMaskedLM(cfg).eval()


# ----------------------------------------------------------------------------- probes


def small_probe_dict() -> dict:
    """A small valid text probe: 3 groups with [[span]] marks, matched negatives and tasks."""
    return {
        "name": "small_royalty",
        "modality": "text",
        "description": "A small royalty probe for tests.",
        "groups": {
            "king": ["The [[king]] spoke to the people.", "A [[king]] sat on the old chair.",
                     "Everyone saw the [[king]] at night."],
            "queen": ["The [[queen]] spoke to the people.", "A [[queen]] sat on the old chair.",
                      "Everyone saw the [[queen]] at night."],
            "prince": ["The [[prince]] spoke to the people.", "A [[prince]] sat on the old chair.",
                       "Everyone saw the [[prince]] at night."],
        },
        "negative": ["The [[farmer]] spoke to the people.", "A [[baker]] sat on the old chair.",
                     "Everyone saw the [[teacher]] at night.", "The [[doctor]] spoke to the people.",
                     "A [[sailor]] sat on the old chair.", "Everyone saw the [[soldier]] at night."],
        "tasks": [{"prompt": "The king sat on his", "target": " throne"},
                  {"prompt": "The queen sat on her", "target": " throne"}],
    }


def count_unk(tokenizer, text: str) -> int:
    """How many unknown tokens ``text`` encodes to."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return sum(1 for i in ids if i == tokenizer.unk_token_id)


# ----------------------------------------------------------------------------- planted ground-truth models
# Shared by test_ground_truth.py and test_ablation.py; the construction is described in
# test_ground_truth.py's module docstring. n_embd = 32 in both families. Residual dims: 0 = concept,
# 1 = king only, 2 = " throne" (read by the tied unembedding), 4/5 = norm fillers.

CONCEPT = ["king", "queen", "monarch", "emperor"]
NEGATIVE = ["farmer", "baker", "teacher", "doctor", "sailor", "soldier", "driver", "painter"]
TEMPLATES = ["The [[{w}]] spoke to the people.", "Everyone saw the [[{w}]] at night.",
             "A [[{w}]] sat on the old chair.", "They waited for the [[{w}]] by the river."]
TASK_PROMPTS = {
    # GPT-2 predicts the target right after the prompt: end the prompt on the concept word
    "gpt2": ["the seat of the {w}", "they bowed to the {w}"],
    # BERT predicts the target at a [MASK] after the prompt; the concept word is anywhere before it
    "bert": ["the {w} sat on his", "they bowed to the {w} on the"],
}
PLANTED, DECOY = 7, 11  # unit indices in layer 0
BIG, A, THRESHOLD, SPREAD = 8.0, 3.0, 1.5, 3.5


def planted_probe(family: str) -> dict:
    groups = {w: [t.format(w=w) for t in TEMPLATES] for w in CONCEPT}                       # 4 x 4 = 16 positives
    negative = [t.format(w=w) for i, w in enumerate(NEGATIVE) for t in TEMPLATES[i % 2::2]]  # 8 x 2 = 16 negatives
    tasks = [{"prompt": p.format(w=w), "target": " throne"} for w in CONCEPT for p in TASK_PROMPTS[family]]
    return {"name": "planted_royalty", "modality": "text", "groups": groups, "negative": negative, "tasks": tasks}


def _ids(tok, words) -> list[int]:
    """Every vocabulary id whose token is one of ``words`` (with or without the byte-level space mark)."""
    return [i for t, i in tok.get_vocab().items() if t.replace("\u0120", "").lower() in words]


def _plant_embeddings(E: torch.Tensor, tok, v_throne: float) -> None:
    with torch.no_grad():
        E[:, :8] = 0
        E[:, 5] = BIG                       # filler: every ordinary token
        concept, king = _ids(tok, CONCEPT), _ids(tok, ["king"])
        E[concept, 5] = 0
        E[concept, 0] = BIG                 # the concept direction
        E[concept, 4] = BIG                 # filler for queen/monarch/emperor ...
        E[king, 4] = 0
        E[king, 1] = BIG                    # ... and the king-only direction instead
        E[_ids(tok, ["throne"]), 2] = v_throne
        for i, w in enumerate(NEGATIVE):    # negatives: a spread of sub-threshold concept values
            E[_ids(tok, [w]), 0] = SPREAD * i / (len(NEGATIVE) - 1)


def planted_gpt2(tok, seed: int = 0, w_out: float = 4.0, v_throne: float = 2.0, mute: int | None = None):
    """Tiny GPT-2 with unit PLANTED (concept -> " throne") and DECOY (king only) planted in layer 0's MLP.

    ``mute``: also plant a unit that reads exactly like PLANTED (same activations, hence the same
    selectivity and consistency) but has an all-zero output projection, so it has no effect.
    """
    model = tiny_gpt2(tok, n_layer=2, n_embd=32, n_head=2, seed=seed)
    _plant_embeddings(model.transformer.wte.weight, tok, v_throne)  # lm_head is tied to wte
    mlp = model.transformer.h[0].mlp
    with torch.no_grad():
        fc, proj = mlp.c_fc, mlp.c_proj  # Conv1D: c_fc.weight [n_embd, n_inner], c_proj.weight [n_inner, n_embd]
        for unit, dim in ((PLANTED, 0), (DECOY, 1)):
            fc.weight[:, unit] = 0
            fc.weight[dim, unit] = A
            fc.bias[unit] = -THRESHOLD * A
            proj.weight[unit, :] = 0
            proj.weight[unit, 2] = w_out
        if mute is not None:
            fc.weight[:, mute] = fc.weight[:, PLANTED]
            fc.bias[mute] = fc.bias[PLANTED]
            proj.weight[mute, :] = 0
    return model


def planted_bert(tok, seed: int = 0, w_out: float = 1.0, v_throne: float = 2.0, copy_gain: float = 16.0,
                 mute: int | None = None):
    """Tiny BertForMaskedLM with PLANTED / DECOY in layer 0 and a path from dim 2 to the [MASK] logits.

    ``mute``: as for :func:`planted_gpt2` (reads like PLANTED, zero output weights).
    """
    model = tiny_bert(tok, n_layer=2, hidden=32, n_head=2, seed=seed)
    _plant_embeddings(model.bert.embeddings.word_embeddings.weight, tok, v_throne)  # decoder is tied
    layer0, layer1 = model.bert.encoder.layer
    with torch.no_grad():
        layer0.attention.output.dense.weight.zero_()
        layer0.attention.output.dense.bias.zero_()
        fc, proj = layer0.intermediate.dense, layer0.output.dense  # Linear: [inter, hidden] and [hidden, inter]
        for unit, dim in ((PLANTED, 0), (DECOY, 1)):
            fc.weight[unit] = 0
            fc.weight[unit, dim] = A
            fc.bias[unit] = -THRESHOLD * A
            proj.weight[:, unit] = 0
            proj.weight[2, unit] = w_out
        if mute is not None:
            fc.weight[mute] = fc.weight[PLANTED]
            fc.bias[mute] = fc.bias[PLANTED]
            proj.weight[:, mute] = 0
        att = layer1.attention.self
        for lin in (att.query, att.key, att.value):  # Q = K = 0: uniform attention; V copies dim 2
            lin.weight.zero_()
            lin.bias.zero_()
        att.value.weight[2, 2] = 1.0
        out = layer1.attention.output.dense
        out.weight.zero_()
        out.bias.zero_()
        out.weight[2, 2] = copy_gain
        head = model.cls.predictions.transform.dense
        head.weight.copy_(torch.eye(32))
        head.bias.zero_()
    return model


class TokenSequences(torch.utils.data.Dataset):
    """Fixed-length token sequences of probe-like words (no padding) with their index, so that the batch order
    of a fit can be compared (the callback and decoder fine-tuning tests)."""

    WORDS = ["the", "king", "queen", "farmer", "sat", "on", "his", "throne", "spoke", "to", "people", "a",
             "baker", "doctor", "at", "night", "old", "chair", "saw", "prince"]

    def __init__(self, tokenizer, n: int, length: int, seed: int = 0) -> None:
        rng = random.Random(seed)
        rows = []
        for _ in range(n):
            ids: list[int] = []
            while len(ids) < length:
                ids += tokenizer(" " + " ".join(rng.choice(self.WORDS) for _ in range(4)), add_special_tokens=False)[
                    "input_ids"]
            rows.append(ids[:length])
        self.ids = torch.tensor(rows, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(self.ids.shape[1], dtype=torch.long), "idx": i}


def naive_deltas(adapter, batch, jobs) -> torch.Tensor:
    """Reference Δ ``[J, B]``: one plain full forward per ablation job with its units zeroed via ``intervene``.

    Own-prediction targets are fixed to the clean model's prediction first (DESIGN §2: y scores the
    original top-1), the same convention the runner follows."""
    from neurolens_lightning.hooks import intervene

    with torch.no_grad():
        clean = adapter.forward(batch)
        batch = adapter.fix_targets(batch, clean)
        y = adapter.confidence(batch, clean).float()
        rows = []
        for job in jobs:
            by_site: dict[int, list[int]] = {}
            for s, u in job.units:
                by_site.setdefault(s, []).append(u)

            def edit(key, t, by_site=by_site):
                t = t.clone()
                v = adapter.site_view(t)
                v[..., by_site[key]] = 0
                return adapter.unview(v, t)

            with intervene({s: adapter.sites[s].module for s in by_site}, edit):
                rows.append(y - adapter.confidence(batch, adapter.forward(batch)).float())
    return torch.stack(rows).double()


def steered_confidence(adapter, scanner, chunks, kind: str, neurons, scale: float) -> "torch.Tensor | None":
    """Reference y of every input chunk of ``kind`` under ``steer(neurons, scale)``, one plain forward per chunk
    (own-prediction targets fixed to the clean model's first), concatenated; None without such chunks."""
    from neurolens_lightning.steering import steer
    from neurolens_lightning.steering.replicas import _task_items

    want = []
    with torch.no_grad():
        for k, items in chunks:
            if k != kind:
                continue
            batch = scanner.encode_confidence(items, tasks=_task_items(scanner, items))
            batch = adapter.fix_targets(batch, adapter.forward(batch))
            with steer(adapter, neurons, scale=scale):
                want.append(adapter.confidence(batch, adapter.forward(batch), None).double())
    return torch.cat(want) if want else None


def free_port() -> int:
    """A free TCP port on the loopback interface (for a gloo rendezvous)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(script, args, devices: int, cwd):
    """Start ``devices`` processes of ``python script args...`` as a torchrun would (one plain process when
    ``devices == 1``): gloo over loopback, offline, one thread each, this checkout and ``tests/`` importable."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root.parent), str(root), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    for k in ("LOCAL_RANK", "RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
        env.pop(k, None)
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    port = free_port()
    procs = []
    for r in range(devices):
        e = dict(env)
        if devices > 1:
            e.update(RANK=str(r), LOCAL_RANK=str(r), NODE_RANK="0", WORLD_SIZE=str(devices),
                     LOCAL_WORLD_SIZE=str(devices), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(script), *map(str, args)], cwd=str(cwd), env=e,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    return procs


def wait_ranks(procs, timeout: float, what: str) -> None:
    """Wait for the processes of :func:`start_ranks`; kill them all and fail after ``timeout`` s; every one must
    exit 0 (the failing ranks' output tails are shown)."""
    import os
    import signal
    import subprocess

    import pytest

    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(f"{what} still running after {timeout} s (killed)")
    bad = [(r, p.returncode, log[-4000:]) for r, (p, log) in enumerate(zip(procs, logs)) if p.returncode != 0]
    assert not bad, bad


def nested_tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested dict/list, by path."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(nested_tensors(v, f"{prefix}/{k}"))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(nested_tensors(v, f"{prefix}/{i}"))
    return out
