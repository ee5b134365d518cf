"""Concept probes: schema, JSON loading and validation, and the built-in catalog.

A probe is a JSON file::

    {
      "name": "royalty",
      "modality": "text",                      # or "image"
      "description": "Words and phrases that denote royalty.",
      "groups": {"king": ["The [[king]] spoke."], "queen": ["The [[queen]] smiled."]},
      "positive": ["An ungrouped positive example."],      # optional if groups given
      "negative": ["The [[farmer]] spoke."],
      "tasks": [{"prompt": "The king sat on his", "target": " throne"}]   # optional
    }

``[[...]]`` marks the concept span of a text example (at most one per example).
Image entries are image files or folders of images, relative to the JSON file; image
tasks are ``{"image": "path.png", "label": 3}``. An image above :data:`MAX_IMAGE_PIXELS`
(40 megapixels) is refused in one line when the probe is read (its header only is read).

Exact duplicates are not independent evidence: an example repeated within a class (the
same text and span after whitespace normalisation, or the same image bytes) is dropped,
keeping its first occurrence, with one warning (:attr:`Concept.warnings`) that counts them;
an example that is both a concept and a control example is an error naming it.

Example:
    >>> c = load_concept({"name": "demo", "modality": "text",
    ...                   "positive": ["a [[king]]", "a [[queen]]"], "negative": ["a man", "a dog"]})
    >>> c.positive[0].text, c.positive[0].span
    ('a king', (2, 6))
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import warnings as _warnings
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence, Union

from neurolens_lightning.errors import ProbeError

Modality = Literal["text", "image"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SPAN_RE = re.compile(r"\[\[(.*?)\]\]")
_DEFAULT_FOLDS = 5
#: images with more pixels than this are refused before decoding (a 40-megapixel RGB image is ~120 MB decoded;
#: every image is resized to the model's input size, a few hundred pixels a side, anyway)
MAX_IMAGE_PIXELS = 40_000_000
#: text examples longer than this are stored in results.json and shown on the page clipped to it (see clip_text)
EXAMPLE_CHARS = 300


@dataclass(frozen=True)
class TextExample:
    """A text example with the concept span (character offsets into ``text``) if marked."""

    text: str
    span: tuple[int, int] | None = None

    @property
    def span_text(self) -> str | None:
        return None if self.span is None else self.text[self.span[0] : self.span[1]]


@dataclass(frozen=True)
class ImageExample:
    """An image example stored as a file."""

    path: Path


Example = Union[TextExample, ImageExample]


@dataclass(frozen=True)
class TextTask:
    """A language-modelling task: ``target`` should follow ``prompt``."""

    prompt: str
    target: str


@dataclass(frozen=True)
class ImageTask:
    """A labelled image: the model should predict class ``label``."""

    image: Path
    label: int


@dataclass
class Concept:
    """A validated concept probe.

    ``positive_groups[i]`` names the phrasing/context group of ``positive[i]``; consistency
    is measured across these groups.
    """

    name: str
    modality: Modality
    positive: list[Example]
    negative: list[Example]
    positive_groups: list[str]
    description: str = ""
    tasks: list[TextTask | ImageTask] = field(default_factory=list)
    source: str = "<object>"
    #: what reading the probe changed, for the result's warnings (e.g. duplicate examples dropped)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.positive_groups) != len(self.positive):
            raise ProbeError(f"probe '{self.name}': positive_groups must have one entry per positive example")
        for label, items in (("positive", self.positive), ("negative", self.negative)):
            if len(items) < 2:
                raise ProbeError(
                    f"probe '{self.name}' ({self.source}): field '{label}' has {len(items)} example(s); "
                    "at least 2 are needed to estimate a variance - add more examples"
                )

    @property
    def group_names(self) -> list[str]:
        """Distinct group names in order of first appearance."""
        return list(dict.fromkeys(self.positive_groups))

    @property
    def group_index(self) -> list[int]:
        """Index into :attr:`group_names` for each positive example."""
        lookup = {g: i for i, g in enumerate(self.group_names)}
        return [lookup[g] for g in self.positive_groups]

    def split(self, holdout: float = 0.5, seed: int = 0) -> tuple["Concept", "Concept"]:
        """Split into (ranking, held-out) halves, stratified by group and class, deterministically.

        Each half keeps at least 2 examples per class, so both remain valid probes.
        """

        def _split(items: list, keys: list[str]) -> tuple[list[int], list[int]]:
            rng = random.Random(seed)
            first, second = [], []
            by_key: dict[str, list[int]] = {}
            for i, k in enumerate(keys):
                by_key.setdefault(k, []).append(i)
            for idx in by_key.values():
                idx = idx[:]
                rng.shuffle(idx)
                n_hold = int(round(len(idx) * holdout))
                n_hold = min(max(n_hold, 1 if len(idx) > 1 else 0), len(idx) - 1) if len(idx) > 1 else 0
                second += idx[:n_hold]
                first += idx[n_hold:]
            return sorted(first), sorted(second)

        if len(self.positive) < 4 or len(self.negative) < 4:
            raise ProbeError(
                f"probe '{self.name}': a held-out split needs at least 4 positive and 4 negative examples "
                f"(has {len(self.positive)} and {len(self.negative)}); add examples or disable the split"
            )
        if len(self.tasks) == 1:
            raise ProbeError(
                f"probe '{self.name}' has 1 task: a held-out split needs at least 2 (one to rank with, one to "
                "validate on, never the same); add tasks, remove the task (y is then measured on the examples), "
                "or disable the split (holdout=0)"
            )
        # a phrasing group of one example cannot be split: such groups share one stratum, so a probe of many
        # single-example groups still gets concept examples on both sides
        sizes: dict[str, int] = {}
        for g in self.positive_groups:
            sizes[g] = sizes.get(g, 0) + 1
        p1, p2 = _split(self.positive, [g if sizes[g] > 1 else "\0single" for g in self.positive_groups])
        n1, n2 = _split(self.negative, ["neg"] * len(self.negative))
        t1, t2 = _split(self.tasks, ["task"] * len(self.tasks)) if self.tasks else ([], [])
        for part, pi, ni in (("ranking", p1, n1), ("held-out", p2, n2)):
            if min(len(pi), len(ni)) < 2:
                raise ProbeError(
                    f"probe '{self.name}': the {part} part of the split (holdout={holdout:g}) gets {len(pi)} concept "
                    f"and {len(ni)} control examples, and each part needs at least 2 of each: the split is "
                    f"stratified by phrasing group ({len(sizes)} groups of sizes "
                    f"{sorted(sizes.values(), reverse=True)[:8]}) - add examples, use a holdout nearer 0.5, or "
                    "disable the split (holdout=0)")

        def _make(pi: list[int], ni: list[int], ti: list[int], tag: str) -> Concept:
            return replace(
                self,
                positive=[self.positive[i] for i in pi],
                positive_groups=[self.positive_groups[i] for i in pi],
                negative=[self.negative[i] for i in ni],
                tasks=[self.tasks[i] for i in ti],
                source=f"{self.source} [{tag} split]",
            )

        return _make(p1, n1, t1, "ranking"), _make(p2, n2, t2, "held-out")

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "modality": self.modality,
            "n_positive": len(self.positive),
            "n_negative": len(self.negative),
            "n_groups": len(self.group_names),
            "n_tasks": len(self.tasks),
            "description": self.description,
        }


# ----------------------------------------------------------------------------- parsing


def split_text(rank_concept: Concept, held_out: Concept | None, ablate: bool = False) -> str:
    """How ``results.json["settings"]["split"]`` names the examples that ranked the neurons (and those held out).

    Example:
        >>> c = Concept("c", "text", [TextExample("a")] * 4, [TextExample("b")] * 4, ["g"] * 4)
        >>> split_text(*c.split(0.5, seed=0), ablate=True)
        'ranked on the ranking split (2 concept and 2 control examples); the disjoint held-out split (2 concept and 2 control examples) is kept for ablation'
    """
    ranked = f"{len(rank_concept.positive)} concept and {len(rank_concept.negative)} control examples"
    if held_out is None:
        return f"all {ranked}" + (" (ranked and ablated on the same examples: holdout=0)" if ablate else "")
    return (f"ranked on the ranking split ({ranked}); the disjoint held-out split ({len(held_out.positive)} "
            f"concept and {len(held_out.negative)} control examples) is kept for ablation")


def parse_marked_text(raw: str, where: str) -> TextExample:
    """Strip one ``[[span]]`` mark from ``raw`` and return the text with span offsets."""
    matches = list(_SPAN_RE.finditer(raw))
    if len(matches) > 1:
        raise ProbeError(f"{where}: has {len(matches)} [[...]] spans; mark at most one concept span per example")
    if not matches:
        if "[[" in raw or "]]" in raw:
            raise ProbeError(f"{where}: unbalanced '[[' / ']]' span mark in {raw!r}")
        return TextExample(raw, None)
    m = matches[0]
    inner = m.group(1)
    if not inner.strip():
        raise ProbeError(f"{where}: the [[...]] span is empty in {raw!r}")
    text = raw[: m.start()] + inner + raw[m.end() :]
    if "[[" in text or "]]" in text:
        raise ProbeError(f"{where}: unbalanced '[[' / ']]' span mark in {raw!r}")
    return TextExample(text, (m.start(), m.start() + len(inner)))


def _short(text: str, n: int = 60) -> str:
    """``text`` with its whitespace collapsed, cut to ``n`` characters with an ellipsis (for messages)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def clip_text(text: str, span: tuple[int, int] | list[int] | None = None, limit: int = EXAMPLE_CHARS
              ) -> tuple[str, tuple[int, int] | None]:
    """``text`` cut to about ``limit`` characters around its span (from its start when it has none), the cut ends
    marked with ``…``, and the span's offsets into the clipped text. Text within ``limit`` is returned unchanged.

    Example:
        >>> t, sp = clip_text("x" * 500 + " the king", (505, 509), limit=20)
        >>> t, t[sp[0]:sp[1]]
        ('…xxxxxxxxxxx the king', 'king')
    """
    if len(text) <= limit:
        return text, (None if span is None else (int(span[0]), int(span[1])))
    if span is None:
        return text[: limit - 1] + "…", None
    s, e = int(span[0]), int(span[1])
    room = max(limit - (e - s), 0)
    start = max(0, min(s - room // 2, len(text) - limit))
    end = max(e, min(len(text), start + limit))
    head, tail = ("…" if start > 0 else ""), ("…" if end < len(text) else "")
    return head + text[start:end] + tail, (s - start + len(head), e - start + len(head))


def check_image_file(path: Path, where: str) -> None:
    """Refuse, in one line and before decoding, an image file above :data:`MAX_IMAGE_PIXELS` (only the header is
    read: ``Image.open(path).size``). A file PIL cannot open passes here (the loader names it); without Pillow nothing
    is checked."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # the image adapters need Pillow and say so when they load the image
        return
    limit = f"NeuroLens reads images up to {MAX_IMAGE_PIXELS / 1e6:g} megapixels; downscale it (every image is " \
            "resized to the model's input size anyway)"
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise ProbeError(f"{where}: image {str(path)!r} is too large to open (over "
                         f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels); {limit}") from None
    except (UnidentifiedImageError, OSError, ValueError):  # not an image: the adapter names it when it loads it
        return
    if w * h > MAX_IMAGE_PIXELS:
        raise ProbeError(f"{where}: image {str(path)!r} is {w}x{h} ({w * h / 1e6:.0f} megapixels); {limit}")


def _text_key(ex: TextExample, with_span: bool) -> str:
    text = ex.text
    if with_span and ex.span is not None:
        s, e = ex.span
        text = f"{text[:s]}[[{text[s:e]}]]{text[e:]}"
    return " ".join(text.split())


def _duplicate_key(ex: Example, with_span: bool, cache: dict[Path, str]) -> tuple[str, str]:
    """What makes two examples the same input: the whitespace-normalised text (and span, ``with_span``), the
    bytes of the image file, else (a tensor) the object itself."""
    if isinstance(ex, TextExample):
        return "text", _text_key(ex, with_span)
    if not isinstance(ex, ImageExample):  # e.g. the callback's image tensors: only the same object is the same
        return "object", str(id(ex))
    path = Path(ex.path)
    if path not in cache:
        try:
            cache[path] = hashlib.sha1(path.read_bytes()).hexdigest()
        except OSError:  # unreadable: the adapter names it when it loads the image
            cache[path] = f"path:{path.resolve()}"
    return "image", cache[path]


def _label(ex: Example) -> str:
    if isinstance(ex, TextExample):
        return repr(_short(ex.text))
    return repr(str(ex.path)) if isinstance(ex, ImageExample) else f"a {type(ex).__name__}"


def drop_duplicates(positive: list[Example], groups: list[str], negative: list[Example], name: str,
                    source: str) -> tuple[list[Example], list[str], list[Example], str | None]:
    """Drop exact duplicates within each class (first occurrence kept, its group too) and refuse an example that is
    in both classes. Returns ``(positive, groups, negative, warning or None)``.

    Example:
        >>> pos = [TextExample("a  king"), TextExample("a king"), TextExample("a queen")]
        >>> p, g, n, w = drop_duplicates(pos, ["", "", ""], [TextExample("a man"), TextExample("a dog")], "x", "")
        >>> [e.text for e in p], w.split(":")[0]
        (['a  king', 'a queen'], 'duplicate examples')
    """
    cache: dict[Path, str] = {}
    neg_plain = {_duplicate_key(ex, False, cache): ex for ex in negative}
    both = [ex for ex in positive if _duplicate_key(ex, False, cache) in neg_plain]
    if both:
        more = f" (and {len(both) - 1} more)" if len(both) > 1 else ""
        raise ProbeError(f"probe '{name}' ({source}): example {_label(both[0])}{more} is both a concept (positive) "
                         "and a control (negative) example; the same input cannot count for and against the concept "
                         "- remove it from one of the two classes")

    def unique(items: list[Example]) -> list[int]:
        seen: set[tuple[str, str]] = set()
        keep = []
        for i, ex in enumerate(items):
            k = _duplicate_key(ex, True, cache)
            if k not in seen:
                seen.add(k)
                keep.append(i)
        return keep

    kp, kn = unique(positive), unique(negative)
    dp, dn = len(positive) - len(kp), len(negative) - len(kn)
    if not dp and not dn:
        return positive, groups, negative, None
    items, kept = (positive, set(kp)) if dp else (negative, set(kn))
    first = next(ex for i, ex in enumerate(items) if i not in kept)
    for label, kept, dropped in (("positive", kp, dp), ("negative", kn, dn)):
        if len(kept) < 2:
            raise ProbeError(f"probe '{name}' ({source}): field '{label}' has {len(kept)} distinct example(s) after "
                             f"dropping {dropped} exact duplicate(s); at least 2 are needed to estimate a variance - "
                             "add more (different) examples")
    warning = (f"duplicate examples: {dp + dn} exact duplicate(s) were dropped ({dp} concept, {dn} control; the same "
               f"{'text and [[span]] after whitespace normalisation' if isinstance(first, TextExample) else 'image'}"
               f" as an earlier example of its class, e.g. {_label(first)}) - a repeated example is not independent "
               f"evidence and would inflate the significance; {len(kp)} concept and {len(kn)} control examples "
               "remain - remove the repeats from the probe")
    return ([positive[i] for i in kp], [groups[i] for i in kp], [negative[i] for i in kn], warning)


def without_duplicates(concept: Concept) -> Concept:
    """``concept`` with exact duplicate examples dropped (see :func:`drop_duplicates`); the same object if none."""
    pos, groups, neg, warning = drop_duplicates(list(concept.positive), list(concept.positive_groups),
                                                list(concept.negative), concept.name, concept.source)
    if warning is None:
        return concept
    return replace(concept, positive=pos, positive_groups=groups, negative=neg,
                   warnings=list(concept.warnings) + [warning])


def _expand_images(entry: str, base: Path, where: str) -> list[ImageExample]:
    path = Path(entry)
    if not path.is_absolute():
        path = base / path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ProbeError(f"{where}: folder {str(path)!r} contains no images ({', '.join(IMAGE_SUFFIXES)})")
        for p in files:
            check_image_file(p, where)
        return [ImageExample(p) for p in files]
    if not path.is_file():
        raise ProbeError(f"{where}: image file {str(path)!r} does not exist (paths are relative to the probe file)")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ProbeError(f"{where}: {str(path)!r} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
    check_image_file(path, where)
    return [ImageExample(path)]


def _examples(value: Any, field_name: str, modality: str, base: Path, src: str) -> list[Example]:
    where = f"probe {src}: field '{field_name}'"
    if not isinstance(value, list):
        raise ProbeError(f"{where} must be a list of {'strings' if modality == 'text' else 'image paths'}, "
                         f"got {type(value).__name__}")
    if not value:
        raise ProbeError(f"{where} is empty; add at least 2 examples")
    out: list[Example] = []
    for i, item in enumerate(value):
        w = f"probe {src}: field '{field_name}[{i}]'"
        if not isinstance(item, str) or not item.strip():
            raise ProbeError(f"{w} must be a non-empty string, got {item!r}")
        if modality == "text":
            out.append(parse_marked_text(item, w))
        else:
            out.extend(_expand_images(item, base, w))
    return out


def _tasks(value: Any, modality: str, base: Path, src: str) -> list[TextTask | ImageTask]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProbeError(f"probe {src}: field 'tasks' must be a list of objects, got {type(value).__name__}")
    out: list[TextTask | ImageTask] = []
    for i, t in enumerate(value):
        w = f"probe {src}: field 'tasks[{i}]'"
        if not isinstance(t, dict):
            raise ProbeError(f"{w} must be an object, got {type(t).__name__}")
        if modality == "text":
            prompt, target = t.get("prompt"), t.get("target")
            if not isinstance(prompt, str) or not prompt.strip():
                raise ProbeError(f"{w}.prompt must be a non-empty string")
            if not isinstance(target, str) or not target.strip():
                raise ProbeError(f"{w}.target must be a non-empty string (e.g. ' throne', with a leading space)")
            out.append(TextTask(prompt, target))
        else:
            image, label = t.get("image"), t.get("label")
            if not isinstance(image, str):
                raise ProbeError(f"{w}.image must be an image path")
            if not isinstance(label, int) or isinstance(label, bool) or label < 0:
                raise ProbeError(f"{w}.label must be a non-negative integer class index")
            out.append(ImageTask(_expand_images(image, base, f"{w}.image")[0].path, label))
    return out


def concept_from_dict(data: Any, base_dir: Path | str = ".", source: str = "<dict>") -> Concept:
    """Validate a probe dictionary (the parsed JSON) and build a :class:`Concept`."""
    src = repr(source)
    if not isinstance(data, dict):
        raise ProbeError(f"probe {src}: the top level must be a JSON object, got {type(data).__name__}")
    known = {"name", "modality", "description", "positive", "groups", "negative", "tasks"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ProbeError(f"probe {src}: unknown field(s) {unknown}; allowed fields are {sorted(known)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ProbeError(f"probe {src}: field 'name' is missing or not a non-empty string")
    modality = data.get("modality", "text")
    if modality not in ("text", "image"):
        raise ProbeError(f"probe {src}: field 'modality' must be 'text' or 'image', got {modality!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ProbeError(f"probe {src}: field 'description' must be a string")
    base = Path(base_dir)

    positive: list[Example] = []
    groups: list[str] = []
    if "groups" in data:
        g = data["groups"]
        if not isinstance(g, dict) or not g:
            raise ProbeError(f"probe {src}: field 'groups' must be a non-empty object mapping group name -> list")
        for gname, items in g.items():
            ex = _examples(items, f"groups.{gname}", modality, base, src)
            positive += ex
            groups += [str(gname)] * len(ex)
    if "positive" in data:
        ex = _examples(data["positive"], "positive", modality, base, src)
        positive += ex
        groups += [""] * len(ex)
    if not positive:
        raise ProbeError(f"probe {src}: field 'positive' (or 'groups') is missing; add concept-positive examples")
    if "negative" not in data:
        raise ProbeError(f"probe {src}: field 'negative' is missing; add a list of concept-negative (control) examples")
    negative = _examples(data["negative"], "negative", modality, base, src)
    tasks = _tasks(data.get("tasks"), modality, base, src)
    # before the groups are filled: ungrouped positives are dealt into folds by their number
    positive, groups, negative, warning = drop_duplicates(positive, groups, negative, name, str(source))
    groups = _fill_groups(positive, groups)
    return Concept(name=name, modality=modality, description=description, positive=positive, negative=negative,
                   positive_groups=groups, tasks=tasks, source=str(source), warnings=[warning] if warning else [])


def _fill_groups(positive: list[Example], groups: list[str]) -> list[str]:
    """Assign ungrouped positives to groups: by their marked concept word, else into K folds.

    A single group carries no information about consistency, so it is split the same way.
    """
    if len(set(groups)) == 1:
        groups = [""] * len(groups)
    if all(groups):
        return groups
    missing = [i for i, g in enumerate(groups) if not g]
    words = [positive[i].span_text.lower().strip() if isinstance(positive[i], TextExample)
             and positive[i].span_text else None for i in missing]
    out = list(groups)
    if all(words) and len(set(words)) >= 2:
        for i, w in zip(missing, words):
            out[i] = f"word:{w}"
        return out
    k = max(2, min(_DEFAULT_FOLDS, len(missing) // 2)) if len(missing) >= 4 else 1
    for j, i in enumerate(missing):
        out[i] = f"fold{j % k}"
    return out


def load_concept_file(path: str | Path) -> Concept:
    """Load and validate a probe JSON file."""
    p = Path(path)
    if not p.is_file():
        raise ProbeError(f"probe file {str(p)!r} does not exist; give a built-in concept name "
                         f"({', '.join(builtin_concept_names())}) or a path to a probe JSON file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ProbeError(f"probe {str(p)!r} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except UnicodeDecodeError:
        raise ProbeError(f"probe {str(p)!r} is not UTF-8 text; save it as UTF-8 JSON") from None
    return concept_from_dict(data, base_dir=p.parent, source=str(p))


# ----------------------------------------------------------------------------- built-ins


def _builtin_dir() -> Path:
    return Path(str(resources.files("neurolens_lightning") / "builtin_concepts"))


def builtin_concept_names() -> list[str]:
    """Names of the concepts shipped with the package."""
    d = _builtin_dir()
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def load_concept(concept: "str | Path | Concept | dict[str, Any]") -> Concept:
    """Resolve a built-in name, a JSON path, a dict or a :class:`Concept` to a validated :class:`Concept`."""
    if isinstance(concept, Concept):
        return concept
    if isinstance(concept, dict):
        return concept_from_dict(concept)
    if isinstance(concept, (str, Path)):
        s = str(concept)
        if s in builtin_concept_names():
            return load_concept_file(_builtin_dir() / f"{s}.json")
        if s.endswith(".json") or Path(s).exists():
            return load_concept_file(s)
        raise ProbeError(f"unknown concept {s!r}: use a built-in concept ({', '.join(builtin_concept_names())}; "
                         "see `neurolens concepts`) or a path to a probe JSON file")
    raise ProbeError(f"concept must be a name, a path, a dict or a Concept, got {type(concept).__name__}")


def load_concepts(concepts: "str | Path | Concept | Sequence[str | Path | Concept]") -> list[Concept]:
    if isinstance(concepts, (str, Path, Concept, dict)):
        return [load_concept(concepts)]
    return [load_concept(c) for c in concepts]
