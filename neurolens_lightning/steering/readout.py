"""What a person reads before and after a steering: target log-prob, top next tokens, a greedy continuation,
masked-LM fills, p(concept) or top classes.

Example:
    >>> _describe_input(TextTask(prompt="The king", target=" ruled"))            # doctest: +SKIP
    {'prompt': 'The king', 'target': ' ruled'}
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from neurolens_lightning.adapters import Batch, ModelAdapter
from neurolens_lightning.concepts import Concept, TextExample, TextTask
from neurolens_lightning.progress import track


def _examples(adapter: ModelAdapter, scanner: Any, held: Concept, neurons: Sequence[tuple[int, int]],
              settings: list[dict[str, Any]], run: Any, n: int, max_new_tokens: int, progress: bool = False
              ) -> list[dict[str, Any]]:
    """Readable before/after outputs of the first ``n`` held-out concept inputs at every setting."""
    items = (list(held.tasks) if scanner.uses_tasks else list(held.positive))[:n]
    out = []
    for it in track(items, len(items), f"before/after outputs [{len(settings)} settings each]", progress,
                    unit="input"):
        batch = scanner.encode_confidence([it], tasks=scanner.uses_tasks).to(adapter.device)
        clean = adapter.forward(batch)
        batch = adapter.fix_targets(batch, clean)
        rec: dict[str, Any] = {"input": _describe_input(it), "outputs": []}
        for st in settings:
            rec["outputs"].append({"label": st["label"], **run(lambda: _readout(adapter, scanner, batch, it,
                                                                                   max_new_tokens), st)})
        out.append(rec)
    return out


def _describe_input(it: Any) -> dict[str, Any]:
    if isinstance(it, TextTask):
        return {"prompt": it.prompt, "target": it.target}
    if isinstance(it, TextExample):
        return {"text": it.text}
    if hasattr(it, "image"):
        return {"image": str(it.image), "label": getattr(it, "label", None)}
    return {"image": str(getattr(it, "path", it))}


def _top_tokens(adapter: ModelAdapter, logits: torch.Tensor, k: int = 5) -> list[dict[str, Any]]:
    p = torch.softmax(logits.float(), -1)
    top = p.topk(k)
    tok = adapter.tokenizer
    return [{"token": tok.decode([int(i)]), "p": float(v)} for v, i in zip(top.values, top.indices)]


def _readout(adapter: ModelAdapter, scanner: Any, batch: Any, item: Any, max_new_tokens: int) -> dict[str, Any]:
    """What a person reads for one input under the current steering (called inside :func:`steer`)."""
    outputs = adapter.forward(batch)
    y = float(adapter.confidence(batch, outputs, scanner.head)[0])
    rec: dict[str, Any] = {"y": y}
    family = adapter.family
    if scanner.head is not None:
        rec["p_concept"] = float(torch.sigmoid(torch.tensor(y)))
        return rec
    if family == "resnet":
        p = torch.softmax(outputs.float()[0], -1)
        top = p.topk(min(5, p.numel()))
        rec["top_classes"] = [{"class": int(i), "p": float(v)} for v, i in zip(top.values, top.indices)]
        return rec
    logits = outputs.logits
    pos = batch.target["pred_pos"][0]
    first = logits[0, 0] if getattr(outputs, "gathered", False) else logits[0, int(pos[0])]
    if family in ("gpt2", "decoder"):  # causal LMs: next tokens and a greedy continuation
        if isinstance(item, TextTask):
            rec["target_logprob"] = y
            prompt_ids = adapter.tokenizer(item.prompt, add_special_tokens=False)["input_ids"]
        else:
            prompt_ids = adapter.tokenizer(item.text, add_special_tokens=False)["input_ids"]
            first = adapter.forward(_ids_batch(adapter, prompt_ids)).logits[0, -1]
        rec["top_next"] = _top_tokens(adapter, first)
        rec["continuation"] = _greedy(adapter, prompt_ids, max_new_tokens)
    else:  # masked LM: the fills at the first [MASK]
        rec["top_fills"] = _top_tokens(adapter, first)
        if isinstance(item, TextTask):
            rec["target_logprob"] = y
    return rec


def _ids_batch(adapter: ModelAdapter, ids: list[int]) -> Any:
    t = torch.tensor([ids], device=adapter.device)
    return Batch(inputs={"input_ids": t, "attention_mask": torch.ones_like(t)}, size=1)


def _greedy(adapter: ModelAdapter, ids: list[int], n: int) -> str:
    """A short greedy continuation (no sampling: the same text for the same steering)."""
    ids = list(ids)
    new: list[int] = []
    for _ in range(n):
        logits = adapter.forward(_ids_batch(adapter, ids + new)).logits[0, -1]
        new.append(int(logits.argmax()))
    return adapter.tokenizer.decode(new)
