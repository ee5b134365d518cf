"""scan / load_model never disturb the user's objects, and the CLI starts without torch.

* a user's module is not moved to CUDA when one is available (device=None/"auto" scores it
  where it is); an explicit device moves it there for the scan and back afterwards, also when
  the scan raises; each submodule's train/eval flag and the tokenizer's pad token are restored;
* ``load_model(weights="random")`` leaves the CPU RNG and every CUDA device's RNG as they were
  (CUDA is faked by monkeypatching ``torch.cuda``: no GPU is needed; one extra check runs only
  on a real GPU), and schedules no seed for a CUDA that is not initialized;
* ``scan`` leaves the global CPU RNG as it was, even if something inside it draws from it;
* ``neurolens --help`` / ``neurolens concepts`` import neither torch, transformers nor Lightning.

CUDA moves are faked by replacing the module's own ``.to`` with a recorder that does not move
anything to CUDA (and forwards other moves): "where the module would be" is the last device it
was sent to.
"""

from __future__ import annotations

import copy
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import small_probe_dict

import neurolens_lightning as nl
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.registry import load_model

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def _record_moves(model: torch.nn.Module) -> list[torch.device]:
    """Replace ``model.to`` by a recorder: CUDA moves are recorded (not done), others done and recorded."""
    moves: list[torch.device] = []
    real_to = torch.nn.Module.to

    def fake_to(*args, **kwargs):
        dev = kwargs.get("device", args[0] if args else None)
        if isinstance(dev, (str, torch.device)):
            dev = torch.device(dev)
            moves.append(dev)
            if dev.type == "cuda":
                return model
        return real_to(model, *args, **kwargs)

    model.to = fake_to  # an instance attribute shadows nn.Module.to (nn.Module.__setattr__ keeps plain callables)
    return moves


def _where(moves: list[torch.device], start: torch.device = CPU) -> torch.device:
    return moves[-1] if moves else start


def _small_scan(model, tokenizer, **kw):
    kw.setdefault("layers", [0])
    kw.setdefault("importance", False)
    return nl.scan(model=model, tokenizer=tokenizer, concept=small_probe_dict(), top_k=2, **kw)


# ----------------------------------------------------------------------------- devices


def test_scan_does_not_move_a_users_module_to_an_available_cuda(gpt2_model, gpt2_tokenizer, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    moves = _record_moves(gpt2_model)
    res = _small_scan(gpt2_model, gpt2_tokenizer)
    assert _where(moves) == CPU, f"scan left the user's module on {_where(moves)} (moves: {moves})"
    assert res.settings["device"] == "cpu"  # scored where it was
    for dev in (None, "auto"):
        moves.clear()
        _small_scan(gpt2_model, gpt2_tokenizer, device=dev)
        assert _where(moves) == CPU, (dev, moves)


def test_scan_with_an_explicit_device_moves_the_module_back(gpt2_model, gpt2_tokenizer):
    moves = _record_moves(gpt2_model)
    _small_scan(gpt2_model, gpt2_tokenizer, device="cuda")
    assert torch.device("cuda") in moves, moves  # it was sent there for the scan ...
    assert _where(moves) == CPU, moves  # ... and back


def test_scan_moves_the_module_back_when_it_raises(gpt2_model, gpt2_tokenizer):
    moves = _record_moves(gpt2_model)
    with pytest.raises(NeuroLensError, match="out of range"):
        _small_scan(gpt2_model, gpt2_tokenizer, device="cuda", layers=[99])  # fails after the model is loaded
    assert torch.device("cuda") in moves and _where(moves) == CPU, moves


def test_scan_of_an_adapter_honours_an_explicit_device_and_moves_back(gpt2_model, gpt2_tokenizer):
    adapter = load_model(gpt2_model, tokenizer=gpt2_tokenizer)
    moves = _record_moves(gpt2_model)
    _small_scan(adapter, None, device="cuda")
    assert torch.device("cuda") in moves and _where(moves) == CPU, moves


def test_load_model_leaves_a_users_module_on_its_device_and_mode(gpt2_model, gpt2_tokenizer, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpt2_model.train()
    moves = _record_moves(gpt2_model)
    for dev in (None, "auto"):
        adapter = load_model(gpt2_model, tokenizer=gpt2_tokenizer, device=dev)
        assert adapter.model is gpt2_model
        assert _where(moves) == CPU, (dev, moves)
        assert gpt2_model.training and all(m.training for m in gpt2_model.modules())
    load_model(gpt2_model, tokenizer=gpt2_tokenizer, device="cuda")  # explicit: moved in place, as documented
    assert _where(moves) == torch.device("cuda")


def test_scan_restores_modes_and_the_tokenizers_pad_token(gpt2_model, gpt2_tokenizer):
    tok = copy.deepcopy(gpt2_tokenizer)
    tok.pad_token = None  # as GPT-2's own tokenizer: the adapter sets one for padding
    gpt2_model.train()
    gpt2_model.transformer.h[0].eval()  # a frozen block inside a model in train mode
    modes = {name: m.training for name, m in gpt2_model.named_modules()}
    params = {name: p for name, p in gpt2_model.named_parameters()}
    _small_scan(gpt2_model, tok, ablate=True, null_samples=4, holdout=0.0)
    assert {name: m.training for name, m in gpt2_model.named_modules()} == modes
    assert tok.pad_token is None
    assert all(p is params[name] for name, p in gpt2_model.named_parameters())  # same Parameter objects
    assert all(p.grad is None for p in gpt2_model.parameters())


# ----------------------------------------------------------------------------- RNG: load_model(weights="random")


def _tiny_random_resnet(seed: int = 0):
    return load_model("resnet18", weights="random", image_size=64, device="cpu", seed=seed)


def test_random_weights_leave_the_cpu_rng_and_schedule_no_cuda_seed():
    torch.manual_seed(1234)
    torch.rand(3)  # a state away from a fresh seed
    before = torch.get_rng_state()
    lazy_before = list(torch.cuda._lazy_seed_tracker.get_calls()) if hasattr(torch.cuda, "_lazy_seed_tracker") \
        else None
    a = _tiny_random_resnet(seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    if lazy_before is not None and not torch.cuda.is_initialized():
        # torch.manual_seed would queue a seed for every CUDA device, applied when CUDA starts later
        assert list(torch.cuda._lazy_seed_tracker.get_calls()) == lazy_before
    b, c = _tiny_random_resnet(seed=0), _tiny_random_resnet(seed=1)
    wa, wb, wc = (x.model.conv1.weight for x in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)  # the weights do come from the seed
    assert torch.equal(torch.get_rng_state(), before)


class _FakeCuda:
    """Two initialized CUDA devices whose RNG states live in a list (monkeypatched into torch.cuda)."""

    def __init__(self, monkeypatch, initialized: bool = True) -> None:
        self.states = [torch.tensor([1, 2, 3], dtype=torch.uint8), torch.tensor([4, 5, 6], dtype=torch.uint8)]
        self.seeded: list[int] = []
        self.saved = 0
        self.initialized = initialized
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: self.initialized)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", self.get_all)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_all)
        monkeypatch.setattr(torch.cuda, "manual_seed_all", self.seed_all)

    def get_all(self):
        self.saved += 1
        return [s.clone() for s in self.states]

    def set_all(self, states):
        self.states = [s.clone() for s in states]

    def seed_all(self, seed):
        self.seeded.append(int(seed))
        self.states = [torch.full((3,), int(seed) % 256, dtype=torch.uint8) for _ in self.states]


def test_random_weights_restore_every_cuda_devices_rng(monkeypatch):
    cuda = _FakeCuda(monkeypatch)
    before = [s.clone() for s in cuda.states]
    cpu_before = torch.get_rng_state()
    _tiny_random_resnet(seed=7)
    assert cuda.saved >= 1, "the CUDA RNG states were not saved"
    assert cuda.seeded == [7]  # seeded like the CPU (an initialized CUDA), ...
    assert all(torch.equal(x, y) for x, y in zip(cuda.states, before)), "a CUDA device's RNG was left re-seeded"
    assert torch.equal(torch.get_rng_state(), cpu_before)


def test_random_weights_reset_a_cuda_initialized_inside_the_load(monkeypatch):
    """CUDA not initialized before (its RNG is not seeded), initialized during the load (a move
    there): its generators are put back to their fresh state (initial seed, offset 0)."""
    cuda = _FakeCuda(monkeypatch, initialized=False)

    class Gen:
        def __init__(self):
            self.reset_to = None

        def initial_seed(self):
            return 99

        def manual_seed(self, s):
            self.reset_to = s

    gens = [Gen(), Gen()]
    monkeypatch.setattr(torch.cuda, "default_generators", tuple(gens))
    from neurolens_lightning import registry

    real = registry._load_model

    def load_and_start_cuda(*a, **k):
        out = real(*a, **k)
        cuda.initialized = True  # as a first .to("cuda") would
        return out

    monkeypatch.setattr(registry, "_load_model", load_and_start_cuda)
    _tiny_random_resnet(seed=7)
    assert cuda.seeded == [] and cuda.saved == 0  # an uninitialized CUDA is neither seeded nor read
    assert [g.reset_to for g in gens] == [99, 99]


# the real-CUDA checks (no skip in CI's suite): benchmarks/device_check.py, run when a GPU is lent


# ----------------------------------------------------------------------------- RNG: scan


def test_scan_leaves_the_global_rngs_as_they_were(gpt2_model, gpt2_tokenizer):
    torch.manual_seed(321)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    _small_scan(gpt2_model, gpt2_tokenizer, ablate=True, ablation="resample", null_samples=4, holdout=0.5)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


def test_scan_restores_the_cpu_rng_even_if_a_pass_draws_from_it(gpt2_model, gpt2_tokenizer, monkeypatch):
    from neurolens_lightning.scanner import ConceptScanner

    real = ConceptScanner.run_activation_pass

    def drawing_pass(self, *a, **k):
        torch.rand(5)  # e.g. dropout left on, or a library drawing without a generator
        return real(self, *a, **k)

    monkeypatch.setattr(ConceptScanner, "run_activation_pass", drawing_pass)
    before = torch.get_rng_state()
    _small_scan(gpt2_model, gpt2_tokenizer)
    assert torch.equal(torch.get_rng_state(), before)


# ----------------------------------------------------------------------------- fast start


def test_cli_help_and_concepts_import_no_torch_transformers_or_lightning():
    code = (
        "import contextlib, io, sys\n"
        "import neurolens_lightning.cli as cli\n"
        "cli.build_parser()\n"
        "for argv in (['--help'], ['scan', '--help'], ['concepts']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            rc = cli.main(argv)\n"
        "        except SystemExit as e:\n"
        "            rc = e.code\n"
        "    assert rc == 0, (argv, rc)\n"
        "    heavy = [m for m in ('torch', 'transformers', 'lightning', 'pytorch_lightning') if m in sys.modules]\n"
        "    assert not heavy, f'neurolens {argv} imported {heavy}'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_scan_of_a_headless_encoder_leaves_no_hooks():
    """A model without an LM head used to be called with output_hidden_states=True, which transformers 5 answers
    with output-capturing forward hooks that stayed on the user's model (4 after one scan): none may remain."""
    from helpers import make_word_tokenizer, tiny_bert_encoder

    from neurolens_lightning.hooks import count_hooks

    tok = make_word_tokenizer("bert")
    model = tiny_bert_encoder(tok, n_layer=2)
    assert count_hooks(model) == 0
    result = nl.scan(model, "negation", tokenizer=tok, top_k=2, ablate=True, null_samples=5)
    assert result.head is not None  # y came from the probe head on the encoder's last hidden state
    assert count_hooks(model) == 0


def test_a_tokenizer_without_pad_token_is_never_left_changed(gpt2_tokenizer):
    """GPT-2-style tokenizers have no pad token. The adapter pads with EOS only while it encodes: after
    ``load_model``, a scan, a ProbeModule validate and a steering run the user's tokenizer still has none."""
    import copy

    import lightning.pytorch as pl
    from helpers import small_probe_dict, tiny_gpt2

    import neurolens_lightning as nl
    from neurolens_lightning.steering import dose_response

    tok = copy.deepcopy(gpt2_tokenizer)
    tok.pad_token = None
    assert tok.pad_token is None
    model = tiny_gpt2(tok)
    adapter = nl.load_model(model, tokenizer=tok)
    assert tok.pad_token is None
    batch = adapter.encode(nl.load_concept(small_probe_dict()).positive[:3])
    assert tok.pad_token is None and int(batch.inputs["input_ids"][-1, -1]) >= 0
    nl.scan(model, small_probe_dict(), tokenizer=tok, importance=True)
    assert tok.pad_token is None
    module = nl.ProbeModule(model, small_probe_dict(), tokenizer=tok)
    pl.Trainer(accelerator="cpu", devices=1, logger=False, inference_mode=False, enable_progress_bar=False,
               enable_model_summary=False).validate(module, datamodule=module.datamodule(), verbose=False)
    assert tok.pad_token is None and module.result is not None
    dose_response(model, small_probe_dict(), [(0, 1)], scales=[0, 1], tokenizer=tok, null_sets=1, n_examples=1,
                  max_new_tokens=2)
    assert tok.pad_token is None
