"""Checks that need a real GPU, for the sessions that are lent one (not a test: CI has no GPU and its suite must
not skip). Run it on the device machine; it exits non-zero on the first failed check.

    python benchmarks/device_check.py

Checks, on CUDA:
  * ``load_model(weights="random", device="cuda")`` leaves every CUDA device's RNG state as it was;
  * ``scan(model=<a user's CPU module>, device="cuda")`` scores on CUDA, then the module is back on the CPU and the
    CUDA RNG states are unchanged;
  * ``scan(..., ablate=True)`` on CUDA gives the CPU run's Δ (to 1e-4) and verdicts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import make_word_tokenizer, small_probe_dict, tiny_gpt2  # noqa: E402

import neurolens_lightning as nl  # noqa: E402
from neurolens_lightning.registry import load_model  # noqa: E402


def check(ok: bool, what: str) -> None:
    print(("PASS " if ok else "FAIL ") + what)
    if not ok:
        sys.exit(1)


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here (run this on the device machine)")
        return
    print(f"device: {torch.cuda.get_device_name()}")
    torch.cuda.init()
    torch.cuda.manual_seed_all(5)
    torch.rand(3, device="cuda")
    before = torch.cuda.get_rng_state_all()
    adapter = load_model("resnet18", weights="random", image_size=64, device="cuda", seed=3)
    check(adapter.device.type == "cuda", "random ResNet-18 loaded on CUDA")
    check(all(torch.equal(x, y) for x, y in zip(torch.cuda.get_rng_state_all(), before)),
          "load_model(weights='random') left the CUDA RNG states as they were")
    tok = make_word_tokenizer("gpt2")
    model = tiny_gpt2(tok)
    args = dict(model=model, tokenizer=tok, concept=small_probe_dict(), top_k=2, ablate=True, neurons=[(0, 3), (1, 5)],
                null_samples=8)
    res = nl.scan(device="cuda", **args)
    check(res.settings["device"].startswith("cuda"), "scan ran on CUDA")
    check(all(p.device.type == "cpu" for p in model.parameters()), "the user's module is back on the CPU")
    check(all(torch.equal(x, y) for x, y in zip(torch.cuda.get_rng_state_all(), before)),
          "scan left the CUDA RNG states as they were")
    cpu = nl.scan(device="cpu", **args)
    for key, rec in cpu.ablation.items():
        got = res.ablation[key]
        check(abs(got["delta"] - rec["delta"]) < 1e-4 and got["verdict"] == rec["verdict"],
              f"neuron {key}: CUDA Δ {got['delta']:.6g} vs CPU {rec['delta']:.6g}, verdict {got['verdict']}")


if __name__ == "__main__":
    main()
