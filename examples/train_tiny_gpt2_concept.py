"""Train a tiny GPT-2 from scratch and watch "royalty" neurons emerge.

The corpus is generated: "<prefix> the <person> <verb> the <object>", where the object depends
on whether the person is royal - royals (king, queen, prince, ... 8 words) sit on the *throne*,
wear the *crown*, hold the *scepter*, live in the *palace*, walk to the *castle*; commoners
(farmer, baker, ... 16 words) get a bench, a hat, a basket, a cottage, the market. To predict
the object the network has to learn that the 8 royal words belong together - a concept that
a random network does not have. A byte-level BPE tokenizer is trained on the corpus with
``tokenizers`` (no download), a 2-layer GPT-2 is trained with
:class:`~neurolens_lightning.training.finetune.CausalLM`, and
:class:`~neurolens_lightning.training.callback.NeuroLensCallback` probes the concept "royal" (positives:
sentences with a royal person, one consistency group per royal word; negatives: the same
sentences with commoners; tasks: "the king sat on the" -> " throne") with causal validation
of the top neurons by ablation. The script prints the timeline (selectivity, consistency,
validated neurons) and writes the emergence report (``<report-dir>/royal``).

Run::

    python examples/train_tiny_gpt2_concept.py            # ~1-2 min on 2 CPU cores
    python examples/train_tiny_gpt2_concept.py --fast     # smoke test, < 1 min
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import QUIET_TRAINER, example_parser, print_report, start  # noqa: E402  (also puts the repo on sys.path)

ROYALS = ["king", "queen", "prince", "princess", "emperor", "empress", "duke", "duchess"]
COMMONERS = ["farmer", "baker", "teacher", "doctor", "sailor", "soldier", "driver", "painter", "miller", "tailor",
             "nurse", "fisher", "cook", "clerk", "smith", "porter"]
# verb -> (royal object, common object)
VERBS = {"sat on": ("throne", "bench"), "wore": ("crown", "hat"), "held": ("scepter", "basket"),
         "lived in": ("palace", "cottage"), "walked to": ("castle", "market")}
PREFIXES = ["", "yesterday", "at dawn", "in the story", "one day", "later", "every morning", "after dinner"]


def sentence(person: str, verb: str, prefix: str, mark: bool = False, swap: bool = False) -> str:
    """One sentence; ``mark`` puts the concept span on the "the" where the object is predicted; ``swap`` gives
    the other class's object (the corpus is noisy on purpose, see :func:`make_corpus`)."""
    obj = VERBS[verb][(0 if person in ROYALS else 1) ^ int(swap)]
    det = "[[the]]" if mark else "the"
    return f"{prefix} the {person} {verb} {det} {obj}".strip()


def make_corpus(n: int, seed: int = 0, noise: float = 0.2) -> list[str]:
    """``n`` sentences, a third of them royal. With probability ``noise`` the object is the other class's, so
    the best prediction is p(royal object | royal person) = 0.8, not 1: the network's confidence does not
    saturate, and ablating a royalty neuron has a measurable effect on it."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        person = rng.choice(ROYALS) if rng.random() < 1 / 3 else rng.choice(COMMONERS)
        out.append(sentence(person, rng.choice(list(VERBS)), rng.choice(PREFIXES), swap=rng.random() < noise))
    return out


def train_tokenizer(texts: list[str], vocab_size: int = 400) -> Any:
    """A byte-level BPE trained on ``texts`` (every corpus word becomes a single token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def royal_concept(per_word: int = 4) -> Any:
    """Positives: royal sentences grouped by royal word; negatives: commoner sentences; tasks: royal objects."""
    from neurolens_lightning.concepts import concept_from_dict

    verbs = list(VERBS)
    groups = {w: [sentence(w, verbs[(i + j) % len(verbs)], PREFIXES[(3 * i + j) % len(PREFIXES)], mark=True)
                  for j in range(per_word)] for i, w in enumerate(ROYALS)}
    negative = [sentence(w, verbs[(i + j) % len(verbs)], PREFIXES[(3 * i + j) % len(PREFIXES)], mark=True)
                for i, w in enumerate(COMMONERS) for j in range(max(1, per_word // 2))]
    tasks = [{"prompt": f"the {w} {v} the", "target": " " + VERBS[v][0]} for w in ROYALS for v in verbs]
    return concept_from_dict({"name": "royal", "modality": "text", "groups": groups, "negative": negative,
                              "tasks": tasks,
                              "description": "Royal persons (king, queen, ...), learned from what follows them."},
                             source="examples/train_tiny_gpt2_concept.py")


def mean_top(point: dict[str, Any], key: str) -> float:
    vals = [c[key] for c in point["top"] if c.get(key) is not None]
    return float(sum(vals) / max(1, len(vals)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = example_parser(__doc__, lr=3e-3, batch_size=32, probe_every=50, report_dir="reports/tiny_gpt2_royal")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--ablate-top-k", type=int, default=5, help="ablate the top-k at each probe (0: off)")
    p.add_argument("--no-steer", action="store_false", dest="steer",
                   help="skip steering the final validated neurons (dose-response, generated text per scale)")
    return p.parse_args(argv)


def steer_final(module: Any, tokenizer: Any, concept: Any, result: Any, out_dir: Path) -> dict[str, Any] | None:
    """Scale the final point's validated neurons (else its top-3 candidates) and print what the model writes."""
    from neurolens_lightning.steering import dose_response

    validated = [k for k, a in result.ablation.items() if a["validated"] and a["direction"] == "drop"]
    neurons = validated or result.top_neurons(3)
    if not neurons:
        print("\nno candidates at the final point: nothing to steer")
        return None
    res = dose_response(module.model, concept, neurons, scales=[0.0, 1.0, 4.0], tokenizer=tokenizer, n_examples=3,
                        max_new_tokens=4)
    res.save(out_dir)
    d = res.to_dict()
    which = "validated" if validated else "top candidate"
    print(f"\nsteering the {len(neurons)} {which} neuron(s) " + " ".join(f"{l}:{i}" for l, i in neurons)
          + f" (y = {d['y']}):")
    for label, y in zip(d["labels"], d["concept_inputs"]["mean_y"]):
        print(f"  {label:>4}: mean y on held-out concept tasks {y:.3f}")
    for ex in d["examples"]:
        inp = ex["input"]
        outs = "   ".join(f"{o['label']}: ...{o['continuation']!r} (log p {o['target_logprob']:.2f})"
                          for o in ex["outputs"])
        print(f"  {inp['prompt']!r} -> {outs}")
    t = d["test"]
    print(f"  against {t['null_n']} random sets of the same size and layers: "
          f"{'BEYOND' if t['beyond_null'] else 'NOT BEYOND'} the null (p_null = {t['p_null']:.3g}; wrong direction on "
          f"{t['wrong_direction_share']:.0%} of the inputs); trend (description only): {t['trend_direction']}, "
          f"Page's p = {t['p_trend']:.2g}; wrote {out_dir / 'steering.html'}")
    # the same neurons around your own code: amplified, they make commoners royal in the generated text

    from neurolens_lightning.steering import steer

    model = module.model
    was_training = model.training
    model.eval()
    d["commoner_prompts"] = {}
    try:
        for prompt in ("the farmer sat on the", "the baker wore the"):
            ids = torch.tensor([tokenizer(prompt)["input_ids"]], device=next(model.parameters()).device)
            texts = {}
            for scale in (1.0, 4.0, 16.0):
                with torch.no_grad(), steer(model, neurons, scale=scale):
                    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                                         pad_token_id=tokenizer.pad_token_id)
                texts[f"x{scale:g}"] = tokenizer.decode(out[0, ids.shape[1]:])
            d["commoner_prompts"][prompt] = texts
            print(f"  {prompt!r} -> " + "   ".join(f"{k}: ...{v!r}" for k, v in texts.items()))
    finally:
        model.train(was_training)
    return d


def _num(x) -> str:
    """A joint Δ for printing ("-" where nothing was ablated: no candidates at that point)."""
    return "-" if x is None else f"{x:.3f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    pl = start(args)
    from torch.utils.data import DataLoader

    from neurolens_lightning.training.callback import NeuroLensCallback
    from neurolens_lightning.training.finetune import CausalLM

    corpus = make_corpus(4000, seed=args.seed)
    tokenizer = train_tokenizer(corpus)
    concept = royal_concept()
    module = CausalLM.from_scratch(tokenizer, n_layer=2, n_embd=64, n_head=4, n_positions=32, seed=args.seed,
                                   lr=args.lr, lr_schedule="cosine", max_length=32)
    loader = DataLoader(corpus, batch_size=args.batch_size, shuffle=True, collate_fn=module.collate)
    steps = 30 if args.fast else args.steps
    callback = NeuroLensCallback(concept, every_n_train_steps=15 if args.fast else args.probe_every,
                                 ablate_top_k=args.ablate_top_k, null_samples=20, report_dir=args.report_dir,
                                 top_k=10, batch_size=64)
    trainer = pl.Trainer(max_steps=steps, callbacks=[callback], **QUIET_TRAINER)
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - t0

    points = callback.history
    print(f"\nconcept 'royal' in a tiny GPT-2 trained from scratch ({steps} steps, {seconds:.1f} s, "
          f"vocabulary {len(tokenizer)})")
    print(f"{'step':>5} {'10 most sel.':>12} {'top-10 sel':>10} {'consist.':>9} {'score':>7} {'n_signif':>9} "
          f"{'validated':>10} {'joint delta':>11}")
    for p in points:
        val = f"{p['ablation']['n_validated']}/{p['ablation']['n_tested']}" if "ablation" in p else "-"
        joint = (f"{p['ablation']['joint_delta']:.3f}" if "ablation" in p and p["ablation"]["joint_delta"] is not None
                 else "-")
        print(f"{p['step']:>5} {p['most_selective_mean']:>12.2f} {mean_top(p, 'selectivity'):>10.2f} "
              f"{mean_top(p, 'consistency'):>9.2f} {mean_top(p, 'score'):>7.3f} {p['n_significant']:>9} {val:>10} "
              f"{joint:>11}")
    first, last = points[0], points[-1]
    print(f"top-10 mean selectivity (top-10 by composite score): {mean_top(first, 'selectivity'):.2f} -> "
          f"{mean_top(last, 'selectivity'):.2f}; consistency {mean_top(first, 'consistency'):.2f} -> "
          f"{mean_top(last, 'consistency'):.2f}; FDR-significant {first['n_significant']} -> {last['n_significant']}")
    if "ablation" in first:
        print(f"causally validated top-{args.ablate_top_k} neurons: {first['ablation']['n_validated']} -> "
              f"{last['ablation']['n_validated']} (most at one point: "
              f"{max(p['ablation']['n_validated'] for p in points)}); joint ablation delta of the top-"
              f"{args.ablate_top_k}: {_num(first['ablation']['joint_delta'])} -> "
              f"{_num(last['ablation']['joint_delta'])} nats")
    if "train_loss" in trainer.callback_metrics:
        print(f"final training loss: {float(trainer.callback_metrics['train_loss']):.3f}")
    report, _ = print_report(args.report_dir, concept.name)
    steering = None
    if args.steer:
        steering = steer_final(module, tokenizer, concept, callback.last_results[concept.name], Path(args.report_dir)
                               / "steer")
    return {"first": mean_top(first, "selectivity"), "last": mean_top(last, "selectivity"), "points": len(points),
            "validated": [p.get("ablation", {}).get("n_validated") for p in points], "report": str(report),
            "seconds": seconds, "steering": steering}


if __name__ == "__main__":
    main()
