"""The macro space: whole sentence encoders of varying depth and width (``kind: macro``).

A genotype picks a word-embedding width (the teacher's table PCA-projected), a depth d, for each of the d
layers an op and an output width, a sentence pooling and the ReLU layer's units; the student is
:class:`naskd.students.macro.MacroStudent`. Tang et al. 2019's distilled BiLSTM is the genotype
``emb300 | lstm300 | ends | relu200``. The supernet (:class:`naskd.supernet.macro.MacroSupernet`) shares
weights by width slicing (HAT, Wang et al. 2020).

A space file::

    kind: macro
    name: macro
    embed: [64, 128, 300]          # word-embedding widths
    depth: [1, 2, 3, 4, 5, 6]
    ops: [lstm, conv3, dwconv5, attn4, attn8]
    widths: [64, 128, 200, 300]    # each layer's output width (lstm: 2 x units per direction)
    pooling: [ends, max, mean]
    classifier: [200, 400]         # the ReLU layer's units

Sentence tasks only (single, pair, regression).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..data.tasks import PAIR, TAGGING
from ..errors import ConfigError, NaskdError
from ..students.macro import POOLINGS, check_layer, parse_op
from ..utils.io import write_json
from .oneshot import BuildContext, OneShotSpace, Part, register_space_kind

FORMAT = 1
_LISTS = ("embed", "depth", "ops", "widths", "pooling", "classifier")
_KEYS = {"kind", "name", "description", *_LISTS}
_INT_LISTS = ("embed", "depth", "widths", "classifier")


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(v), type(v).__name__)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class MacroGenotype:
    """One macro architecture: ``embed`` word-embedding width, ``layers`` ((op, output width), ...) of
    length ``depth``, ``pooling`` (ends, max, mean), ``classifier`` the ReLU layer's units."""
    space: str
    embed: int
    layers: tuple
    pooling: str
    classifier: int

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def width(self) -> int:
        """The last layer's output width (what the pooling returns)."""
        return self.layers[-1][1]

    def to_dict(self) -> dict:
        return {"kind": "macro", "format": FORMAT, "space": self.space, "embed": self.embed,
                "layers": [[op, w] for op, w in self.layers], "pooling": self.pooling,
                "classifier": self.classifier}

    @classmethod
    def from_dict(cls, d: Any, source: str = "genotype") -> MacroGenotype:
        """The genotype a JSON mapping describes (as :meth:`to_dict` writes it). One :class:`NaskdError`
        naming ``source`` and the problem when it is not one: not a mapping, another kind or format, a key
        missing or unknown, a width or unit count that is not a whole number >= 1, no layers, a layer that
        is not [op, width], an op outside lstm / conv<k> / dwconv<k> / attn<h>, an odd width or one an
        attention op's heads do not divide, an unknown pooling."""
        where = f"{source} is not a valid macro genotype"
        if not isinstance(d, dict):
            raise NaskdError(f"{where}: it holds a JSON {_json_type(d)}, not an object of embed, layers, pooling, "
                             "classifier")
        if d.get("kind", "macro") != "macro":
            raise NaskdError(f"{where}: its kind is {d['kind']!r}")
        if d.get("format", FORMAT) != FORMAT:
            raise NaskdError(f"{where}: format {d['format']!r}, this naskd reads format {FORMAT}")
        known = {"kind", "format", "space", "embed", "layers", "pooling", "classifier"}
        missing = [k for k in ("embed", "layers", "pooling", "classifier") if k not in d]
        if missing:
            raise NaskdError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
        unknown = sorted(set(d) - known)
        if unknown:
            raise NaskdError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
        space = d.get("space", "macro")
        if not isinstance(space, str):
            raise NaskdError(f"{where}: 'space' must be a name, got {space!r}")
        for key in ("embed", "classifier"):
            if not _is_int(d[key]) or d[key] < 1:
                raise NaskdError(f"{where}: '{key}' must be an integer >= 1, got {d[key]!r}")
        if not isinstance(d["pooling"], str) or d["pooling"] not in POOLINGS:
            raise NaskdError(f"{where}: 'pooling' must be one of {', '.join(POOLINGS)}, got {d['pooling']!r}")
        layers = d["layers"]
        if not isinstance(layers, list) or not layers:
            raise NaskdError(f"{where}: 'layers' must be a non-empty list of [op, width] (depth >= 1)")
        parsed = []
        for i, layer in enumerate(layers):
            if not (isinstance(layer, list) and len(layer) == 2 and isinstance(layer[0], str) and _is_int(layer[1])):
                raise NaskdError(f"{where}: layers[{i}] must be [op name, width], got {layer!r}")
            try:
                check_layer(layer[0], layer[1])
            except ConfigError as e:
                raise NaskdError(f"{where}: layers[{i}]: {e}") from None
            parsed.append((layer[0], layer[1]))
        return cls(space=space, embed=d["embed"], layers=tuple(parsed), pooling=d["pooling"],
                   classifier=d["classifier"])

    def describe(self) -> str:
        """e.g. ``emb300 | lstm300 | ends | relu200``, ``emb128 | conv3-200 | attn4-64 | max | relu400``."""
        layers = [f"{op}{w}" if op[-1].isalpha() else f"{op}-{w}" for op, w in self.layers]
        return " | ".join([f"emb{self.embed}", *layers, self.pooling, f"relu{self.classifier}"])

    @classmethod
    def from_description(cls, text: str, space: str = "macro") -> MacroGenotype:
        """The genotype :meth:`describe` wrote as ``text`` (``emb300 | conv3-64 | lstm200 | mean | relu400``),
        e.g. read back from a metrics.json ``description`` or a Markdown table (its escaped ``\\|`` read as
        ``|``); one :class:`NaskdError` naming the part that is not one when ``text`` is not such a line (the
        checks of :meth:`from_dict` apply)."""
        where = f"{text!r} is not a macro genotype's description"
        parts = [p.strip() for p in text.replace("\\|", "|").split("|")] if isinstance(text, str) else []
        if len(parts) < 4:
            raise NaskdError(f"{where}: expected 'embN | layer | ... | pooling | reluN' (at least one layer)")
        emb, *layers, pooling, relu = parts
        numbers = {}
        for name, part, prefix in (("embed", emb, "emb"), ("classifier", relu, "relu")):
            m = re.fullmatch(prefix + r"(\d+)", part)
            if m is None:
                raise NaskdError(f"{where}: {part!r} is not {prefix}<N>")
            numbers[name] = int(m.group(1))
        parsed = []
        for part in layers:
            m = re.fullmatch(r"(lstm)(\d+)|([a-z]+\d+)-(\d+)", part)
            if m is None:
                raise NaskdError(f"{where}: layer {part!r} is not lstm<width> or <op>-<width> (conv3-64, attn4-200)")
            parsed.append([m.group(1), int(m.group(2))] if m.group(1) else [m.group(3), int(m.group(4))])
        return cls.from_dict({"space": space, "layers": parsed, "pooling": pooling, **numbers}, f"{text!r}")

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict())


def _sentence_only(ctx: BuildContext | None) -> None:
    if ctx is not None and ctx.kind == TAGGING:
        raise ConfigError("the macro space is for sentence tasks (single, pair, regression), not tagging; "
                          "use nas_kd or teacher")


def _built(ctx: BuildContext, make):
    """``make()`` initialised from ``ctx.seed`` (the global RNG left as it was), its word embeddings from
    the teacher's when ``ctx`` names one (``embedding_note`` says how)."""
    from ..network import teacher_embedding_tables

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(ctx.seed)
        model = make()
    if ctx.teacher_dir is not None:
        model.embedding_note = model.init_from_teacher(teacher_embedding_tables(ctx.teacher_dir))
    return model


def head_tag(ctx: BuildContext) -> str:
    """The task part of a head's latency key: its kind, with ``+pair`` for a pair regression."""
    return ctx.kind + ("+pair" if ctx.pair and ctx.kind != PAIR else "")


@register_space_kind
class MacroSpace(OneShotSpace):
    kind = "macro"
    genotype_class = MacroGenotype

    def __init__(self, *, name: str, embed, depth, ops, widths, pooling, classifier, description: str = "",
                 source: str = ""):
        self.name, self.description, self.source = name, description, source
        self.embed, self.depth, self.ops = tuple(embed), tuple(depth), tuple(ops)
        self.widths, self.pooling, self.classifier = tuple(widths), tuple(pooling), tuple(classifier)

    # --- reading --------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, data: dict, source: str, ctx: BuildContext | None = None) -> MacroSpace:
        """The space of a ``kind: macro`` file (``data`` its mapping). ConfigError naming ``source`` and the
        choice for an unknown key, a missing or empty list, a value of the wrong type, and whatever
        :meth:`check` rejects; for a tagging task (``ctx.kind``)."""
        if not isinstance(data, dict):
            raise ConfigError(f"search space {source}: expected a mapping of {', '.join(_LISTS)}")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigError(f"search space {source}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
        if data.get("kind", "macro") != "macro":
            raise ConfigError(f"search space {source}: kind {data['kind']!r} is not macro")
        lists = {}
        for key in _LISTS:
            v = data.get(key)
            if not isinstance(v, list) or not v:
                raise ConfigError(f"search space {source}: '{key}' must be a non-empty list, got {v!r}")
            want_int = key in _INT_LISTS
            for x in v:
                if (want_int and not _is_int(x)) or (not want_int and not isinstance(x, str)):
                    raise ConfigError(f"search space {source}: {key}: {x!r} is not "
                                      f"{'a whole number' if want_int else 'a name'}")
            lists[key] = v
        name = data.get("name", os.path.splitext(os.path.basename(str(source)))[0])
        if not isinstance(name, str) or not name:
            raise ConfigError(f"search space {source}: 'name' must be a non-empty string, got {name!r}")
        desc = data.get("description", "")
        space = cls(name=name, description=str(desc or "").strip(), source=str(source), **lists)
        space.check()
        _sentence_only(ctx)
        return space

    def to_dict(self) -> dict:
        """The space as its file declares it (:meth:`from_yaml` reads it back)."""
        return {"kind": self.kind, "name": self.name, "description": self.description, "embed": list(self.embed),
                "depth": list(self.depth), "ops": list(self.ops), "widths": list(self.widths),
                "pooling": list(self.pooling), "classifier": list(self.classifier)}

    def check(self) -> None:
        """ConfigError naming the space file and the choice: an empty or repeated list, an embed, width or
        classifier below 1 (widths: odd, or below 2), a depth below 1, an unknown op or pooling, a width
        an attention op's heads do not divide."""
        where = f"search space {self.source or self.name}"
        for key in _LISTS:
            values = getattr(self, key)
            if not values:
                raise ConfigError(f"{where}: '{key}' must list at least one choice")
            if len(set(values)) != len(values):
                raise ConfigError(f"{where}: '{key}' repeats a choice: {list(values)}")
        for key, low in (("embed", 1), ("depth", 1), ("classifier", 1), ("widths", 2)):
            for v in getattr(self, key):
                if not _is_int(v) or v < low:
                    raise ConfigError(f"{where}: {key}: {v!r} must be a whole number >= {low}")
        for w in self.widths:
            if w % 2:
                raise ConfigError(f"{where}: widths: {w} is odd (a BiLSTM's two halves and the 'ends' pooling "
                                  "need an even width)")
        for op in self.ops:
            try:
                parse_op(op)
                for w in self.widths:
                    check_layer(op, w)
            except ConfigError as e:
                raise ConfigError(f"{where}: ops: {op}: {e}") from None
        for p in self.pooling:
            if p not in POOLINGS:
                raise ConfigError(f"{where}: pooling: unknown {p!r}; known: {', '.join(POOLINGS)}")

    # --- the discrete space ---------------------------------------------------------------------
    @property
    def max_depth(self) -> int:
        return max(self.depth)

    def dimensions(self) -> dict[str, tuple]:
        """``embed``, ``depth``, ``op_0``..``op_{D-1}``, ``width_0``..``width_{D-1}`` (D the largest depth,
        present at every depth), ``pooling``, ``classifier``."""
        dims = {"embed": self.embed, "depth": self.depth}
        dims.update({f"op_{i}": self.ops for i in range(self.max_depth)})
        dims.update({f"width_{i}": self.widths for i in range(self.max_depth)})
        dims.update({"pooling": self.pooling, "classifier": self.classifier})
        return dims

    def from_choices(self, choices: Mapping[str, Any]) -> MacroGenotype:
        """ConfigError naming the dimension for a value missing (among those the depth uses) or not among
        its options (any dimension given)."""
        dims = self.dimensions()
        picked = {}
        for key, options in dims.items():
            if key not in choices:
                continue
            v = choices[key]
            if isinstance(v, bool) or v not in options:
                raise ConfigError(f"macro space {self.name}: {key} = {v!r} is not one of {list(options)}")
            picked[key] = options[options.index(v)]              # the option itself (a numpy int -> int)
        unknown = sorted(set(choices) - set(dims))
        if unknown:
            raise ConfigError(f"macro space {self.name}: unknown dimensions {unknown}")
        depth = picked.get("depth")
        need = ["embed", "depth", "pooling", "classifier"]
        if depth is not None:
            need += [f"{k}_{i}" for i in range(depth) for k in ("op", "width")]
        missing = [k for k in need if k not in picked]
        if missing:
            raise ConfigError(f"macro space {self.name}: no choice for {', '.join(missing)}")
        layers = tuple((picked[f"op_{i}"], picked[f"width_{i}"]) for i in range(depth))
        return MacroGenotype(space=self.name, embed=picked["embed"], layers=layers, pooling=picked["pooling"],
                             classifier=picked["classifier"])

    def choices_of(self, genotype: MacroGenotype) -> dict:
        if not self.contains(genotype):
            raise ConfigError(f"{genotype.describe()} is not in the macro space {self.name}")
        out = {k: v[0] for k, v in self.dimensions().items()}
        out.update(embed=genotype.embed, depth=genotype.depth, pooling=genotype.pooling,
                   classifier=genotype.classifier)
        for i, (op, w) in enumerate(genotype.layers):
            out[f"op_{i}"], out[f"width_{i}"] = op, w
        return out

    def size(self) -> int:
        """The distinct genotypes: sum over depths d of (ops x widths)^d, times embeds, poolings, classifiers."""
        per_layer = len(self.ops) * len(self.widths)
        return sum(per_layer ** d for d in self.depth) * len(self.embed) * len(self.pooling) * len(self.classifier)

    def contains(self, genotype) -> bool:
        """True for a MacroGenotype whose every choice is among this space's (its ``space`` name aside)."""
        return (isinstance(genotype, MacroGenotype) and genotype.embed in self.embed
                and genotype.depth in self.depth and genotype.pooling in self.pooling
                and genotype.classifier in self.classifier
                and all(op in self.ops and w in self.widths for op, w in genotype.layers))

    def baselines(self, ctx: BuildContext | None = None) -> dict:
        """{name: genotype} of the shipped baselines this space holds: ``bilstm_soft`` (Tang et al. 2019's
        BiLSTM at `naskd retrain --student bilstm_soft`'s default sizes: embedding 300, 150 units per
        direction, ReLU 200) when its choices are among the space's."""
        g = MacroGenotype(self.name, 300, (("lstm", 300),), "ends", 200)
        return {"bilstm_soft": g} if self.contains(g) else {}

    def genotype_from_dict(self, d: dict, source: str = "genotype") -> MacroGenotype:
        return MacroGenotype.from_dict(d, source)

    # --- models ---------------------------------------------------------------------------------
    def supernet(self, ctx: BuildContext):
        """A :class:`naskd.supernet.macro.MacroSupernet` of this space for the task of ``ctx``, initialised
        from ``ctx.seed`` (the global RNG is left as it was), its embedding table from ``ctx.teacher_dir``'s
        when given (``embedding_note`` says how)."""
        from ..supernet.macro import MacroSupernet

        _sentence_only(ctx)
        return _built(ctx, lambda: MacroSupernet(self, vocab_size=ctx.vocab_size, kind=ctx.kind,
                                                 num_labels=ctx.num_labels, pair=ctx.pair, dropout=ctx.dropout))

    def build_student(self, genotype: MacroGenotype, ctx: BuildContext):
        """A fresh :class:`naskd.students.macro.MacroStudent` initialised from ``ctx.seed`` (the global RNG is
        left as it was), its word embeddings from the teacher's when given (``embedding_note`` says how)."""
        from ..students.macro import MacroStudent

        _sentence_only(ctx)
        if not isinstance(genotype, MacroGenotype):
            raise ConfigError(f"the macro space builds macro genotypes, not a {type(genotype).__name__}")
        return _built(ctx, lambda: MacroStudent(genotype, vocab_size=ctx.vocab_size, kind=ctx.kind,
                                                num_labels=ctx.num_labels, pair=ctx.pair, dropout=ctx.dropout))

    # --- latency --------------------------------------------------------------------------------
    def latency_parts(self, genotype: MacroGenotype, ctx: BuildContext) -> list[Part]:
        """``macro:embed:E`` (the lookup, dropout, zeroing); for pairs ``macro:split:E`` (sentence b moved to
        the front) and per layer ``macro:merge:w`` (its states put back at the pair's positions); per layer
        ``macro:{op}:{in}:{out}``; ``macro:pool:{pooling}:{w}``; ``macro:head:{w}:{C}:{labels}:{task}``. The
        encoder parts (layers, pooling) count twice for pairs. Equal keys are merged into one count."""
        _sentence_only(ctx)
        n = 2 if ctx.pair else 1
        keys: dict[str, int] = {}

        def add(key, count=1):
            keys[key] = keys.get(key, 0) + count

        add(f"macro:embed:{genotype.embed}")
        if ctx.pair:
            add(f"macro:split:{genotype.embed}")
        w_in = genotype.embed
        for op, w in genotype.layers:
            add(f"macro:{op}:{w_in}:{w}", n)
            if ctx.pair:
                add(f"macro:merge:{w}")
            w_in = w
        add(f"macro:pool:{genotype.pooling}:{w_in}", n)
        add(f"macro:head:{w_in}:{genotype.classifier}:{ctx.num_labels}:{head_tag(ctx)}")
        return [Part(k, c) for k, c in keys.items()]

    def part_module(self, key: str, ctx: BuildContext):
        """``(module, input_width)`` for a key of :meth:`latency_parts` (random weights, eval mode). The
        embedding part takes ``(input_ids, attention_mask)`` (input width 0); every other part ``(x, mask)``
        with x (B, L, input_width): the pair parts take the first half of each row's real tokens as
        sentence a; the head reads its pooled feature(s) at the first (and for pairs last) position."""
        from ..students.macro import part_module

        _sentence_only(ctx)
        return part_module(key, ctx)

