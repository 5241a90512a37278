"""The teacher space (``search_spaces/teacher.yaml``, ``kind: teacher``): the fine-tuned teacher's first k
of its L layers, with its embeddings and its task head (BERT_k of Sun et al. 2019), k among ``layers``
(``auto``: 1..L). One dimension, ``k``.

The supernet is the whole fine-tuned teacher; its path of k layers is an early exit: the first k layers,
then the same pooling and head (:class:`TeacherSupernet`). The standalone student of k is what
``naskd retrain --student truncated_teacher --truncate-k k`` builds (:func:`truncated_teacher`).

Slicing heads or FFN units by importance (DynaBERT, Hou et al. 2020) is not part of this space: depth is
its only dimension.

Latency parts (keys; SIG = ``MODEL_TYPE:HIDDEN:HEADS:INTERMEDIATE`` of the teacher's config):
``teacher:embed:SIG``, an input part: the embeddings and the attention mask the layers read;
``teacher:layer:SIG``, counted k times: one transformer layer; ``teacher:head:SIG:KIND:POOLING:C``: the
pooling (or word gathering, tagging) and the task head.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, NaskdError
from ..students.baselines import TruncatedTeacher, truncated_teacher
from .oneshot import BuildContext, OneShotSpace, Part, register_space_kind

FORMAT = 1
_KEYS = {"kind", "name", "description", "layers"}
_GENOTYPE_KEYS = {"format", "kind", "space", "k", "teacher_layers"}


@dataclass(frozen=True)
class TeacherGenotype:
    """The teacher's first ``k`` of its ``teacher_layers`` layers (1 <= k <= teacher_layers), from the
    teacher space named ``space``."""
    space: str
    k: int
    teacher_layers: int

    def to_dict(self) -> dict:
        return {"format": FORMAT, "kind": "teacher", "space": self.space, "k": self.k,
                "teacher_layers": self.teacher_layers}

    @classmethod
    def from_dict(cls, d: Any, source: str = "genotype") -> TeacherGenotype:
        """The genotype a JSON mapping describes (as :meth:`to_dict` writes it); one :class:`NaskdError`
        naming ``source`` and the problem when it is not one: not a mapping, another kind or format, a key
        missing or unknown, a space that is not a name, k or teacher_layers not a whole number >= 1, k
        above teacher_layers."""
        where = f"{source} is not a valid teacher genotype"
        if not isinstance(d, dict):
            raise NaskdError(f"{where}: it holds a JSON {type(d).__name__}, not an object of kind, space, k, "
                             "teacher_layers")
        if d.get("kind") != "teacher":
            raise NaskdError(f"{where}: its kind is {d.get('kind', 'cell (absent)')!r}, not 'teacher'")
        if d.get("format", FORMAT) != FORMAT:
            raise NaskdError(f"{where}: format {d['format']!r}, this naskd reads format {FORMAT}")
        missing = [k for k in ("space", "k", "teacher_layers") if k not in d]
        if missing:
            raise NaskdError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
        unknown = sorted(set(d) - _GENOTYPE_KEYS)
        if unknown:
            raise NaskdError(f"{where}: unknown keys {unknown}; allowed: {sorted(_GENOTYPE_KEYS)}")
        if not isinstance(d["space"], str):
            raise NaskdError(f"{where}: 'space' must be a name, got {d['space']!r}")
        for key in ("k", "teacher_layers"):
            v = d[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise NaskdError(f"{where}: '{key}' must be an integer >= 1, got {v!r}")
        if d["k"] > d["teacher_layers"]:
            raise NaskdError(f"{where}: k {d['k']} is more than the teacher's {d['teacher_layers']} layers")
        return cls(space=d["space"], k=d["k"], teacher_layers=d["teacher_layers"])

    def describe(self) -> str:
        """E.g. ``teacher layers 1-3 of 6`` (``teacher layer 1 of 6`` for k = 1)."""
        if self.k == 1:
            return f"teacher layer 1 of {self.teacher_layers}"
        return f"teacher layers 1-{self.k} of {self.teacher_layers}"

    def save(self, path) -> None:
        from ..utils.io import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> TeacherGenotype:
        """The teacher genotype in the JSON file ``path`` (NaskdError naming it when it is not one)."""
        from .oneshot import load_genotype

        g = load_genotype(path)
        if not isinstance(g, cls):
            raise NaskdError(f"{path} holds a {type(g).__name__}, not a teacher genotype")
        return g


def _teacher_shape(ctx: BuildContext | None, what: str) -> tuple[int, int | None]:
    """(L, hidden width) of the teacher ``ctx`` names: L from ``teacher_layers`` or ``teacher_dir``'s
    teacher.json, the width from that file (None without a ``teacher_dir``)."""
    info = None
    if ctx is not None and ctx.teacher_dir is not None:
        from ..teachers.model import read_teacher_info

        info = read_teacher_info(ctx.teacher_dir)
        if info.get("ensemble") is not None:
            raise ConfigError(f"{what} is made of the teacher's own layers; {ctx.teacher_dir} is an ensemble "
                              f"teacher (pass one of its members: {', '.join(info['ensemble'])})")
    if ctx is not None and ctx.teacher_layers is not None:
        L = int(ctx.teacher_layers)
    elif info is not None:
        L = int(info["num_layers"])
    else:
        raise ConfigError(f"{what} depends on the teacher's depth: give a teacher run (--teacher)")
    return L, (int(info["hidden_size"]) if info is not None else None)


def _need_dir(ctx: BuildContext, what: str) -> Path:
    if ctx.teacher_dir is None:
        raise ConfigError(f"{what} is built from the teacher: give a teacher run (--teacher)")
    return Path(ctx.teacher_dir)


@register_space_kind
class TeacherSpace(OneShotSpace):
    """The first k layers of an L-layer teacher, k in ``layers`` (sorted, distinct, within 1..L)."""

    kind = "teacher"
    genotype_class = TeacherGenotype

    def __init__(self, teacher_layers: int, layers=None, *, hidden: int | None = None, name: str = "teacher",
                 description: str = "", source: str = ""):
        self.teacher_layers = teacher_layers
        self.hidden = hidden            # the teacher's hidden width, when known (for fixed_shape)
        self.layers = tuple(range(1, teacher_layers + 1)) if layers is None else tuple(layers)
        self.name, self.description, self.source = name, description, source

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, data: dict, source: str, ctx: BuildContext | None = None) -> TeacherSpace:
        """The space a ``kind: teacher`` file declares: ``name``, ``description``, ``layers`` (``auto``,
        the default: 1..L; or a list of depths within 1..L). ``ctx`` gives L (its ``teacher_layers``, or
        its ``teacher_dir``'s); ConfigError naming ``source`` when there is none or the file is malformed."""
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ConfigError(f"{source}: unknown keys {unknown}; allowed: {sorted(_KEYS)}")
        if data.get("kind", "teacher") != "teacher":
            raise ConfigError(f"{source}: kind {data['kind']!r} is not 'teacher'")
        L, hidden = _teacher_shape(ctx, f"the teacher space {source}")
        raw = data.get("layers", "auto")
        if raw == "auto":
            layers = None
        elif isinstance(raw, list) and raw and all(isinstance(v, int) and not isinstance(v, bool) for v in raw):
            if len(set(raw)) != len(raw):
                raise ConfigError(f"{source}: 'layers' repeats a depth: {raw}")
            layers = sorted(raw)
        else:
            raise ConfigError(f"{source}: 'layers' must be 'auto' or a non-empty list of depths, got {raw!r}")
        space = cls(L, layers, hidden=hidden, name=str(data.get("name", Path(source).stem)),
                    description=str(data.get("description", "")), source=str(source))
        space.check()
        return space

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "description": self.description,
                "layers": list(self.layers)}

    # --- the discrete space -------------------------------------------------------------------
    def dimensions(self) -> dict[str, tuple]:
        return {"k": self.layers}

    def from_choices(self, choices: Mapping[str, Any]) -> TeacherGenotype:
        """The genotype of ``choices["k"]``; ConfigError when it is missing or not one of ``layers``."""
        if "k" not in choices:
            raise ConfigError(f"search space {self.name}: no choice for 'k'")
        k = choices["k"]
        if isinstance(k, bool) or k not in self.layers:
            raise ConfigError(f"search space {self.name}: 'k' cannot be {k!r}; options: "
                              f"{', '.join(map(str, self.layers))}")
        return TeacherGenotype(self.name, int(k), self.teacher_layers)

    def choices_of(self, genotype: TeacherGenotype) -> dict:
        """``{"k": genotype.k}``; ConfigError when the genotype is not in the space."""
        if not self.contains(genotype):
            raise ConfigError(f"{genotype!r} is not in search space {self.name} (depths "
                              f"{', '.join(map(str, self.layers))} of {self.teacher_layers})")
        return {"k": genotype.k}

    def size(self) -> int:
        """Exactly the number of depths."""
        return len(self.layers)

    def sample(self, rng: np.random.Generator) -> TeacherGenotype:
        """A depth uniformly from ``layers``."""
        return super().sample(rng)

    def check(self) -> None:
        """ConfigError naming the space file unless L >= 1 and ``layers`` is a non-empty sorted list of
        distinct depths within 1..L."""
        where = self.source or self.name
        L = self.teacher_layers
        if isinstance(L, bool) or not isinstance(L, int) or L < 1:
            raise ConfigError(f"{where}: the teacher must have at least one layer, got {L!r}")
        if not self.layers:
            raise ConfigError(f"{where}: 'layers' is empty; give at least one depth")
        bad = [k for k in self.layers if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= L]
        if bad:
            raise ConfigError(f"{where}: depths {bad} are outside 1..{L} of the {L}-layer teacher")
        if list(self.layers) != sorted(set(self.layers)):
            raise ConfigError(f"{where}: 'layers' must be distinct depths, got {list(self.layers)}")

    def contains(self, genotype) -> bool:
        """True for a :class:`TeacherGenotype` of this teacher's depth L whose k is one of ``layers`` (the
        space name is a label, not compared)."""
        return (isinstance(genotype, TeacherGenotype) and genotype.teacher_layers == self.teacher_layers
                and genotype.k in self.layers)

    # --- genotypes ----------------------------------------------------------------------------
    def baselines(self, ctx: BuildContext | None = None) -> dict:
        """{name: genotype}: ``truncated_teacher`` at `naskd retrain`'s default k = ceil(L / 2) (BERT_k-PKD's
        student), when the space holds it."""
        g = self.from_choices({"k": -(-self.teacher_layers // 2)}) if -(-self.teacher_layers // 2) in \
            self.dimensions()["k"] else None
        return {"truncated_teacher": g} if g is not None else {}

    def genotype_from_dict(self, d: dict, source: str = "genotype") -> TeacherGenotype:
        """:meth:`TeacherGenotype.from_dict` (NaskdError naming ``source``); it need not be in the space."""
        return TeacherGenotype.from_dict(d, source)

    # --- models -------------------------------------------------------------------------------
    def _check_genotype(self, genotype) -> TeacherGenotype:
        if not isinstance(genotype, TeacherGenotype):
            raise NaskdError(f"search space {self.name} builds teacher genotypes, not {type(genotype).__name__}")
        if genotype.teacher_layers != self.teacher_layers:
            raise NaskdError(f"{genotype.describe()} is of a {genotype.teacher_layers}-layer teacher, this "
                             f"one has {self.teacher_layers} layers")
        return genotype

    def supernet(self, ctx: BuildContext) -> TeacherSupernet:
        """The whole fine-tuned teacher of ``ctx.teacher_dir`` (its L layers, head dropout ``ctx.dropout``)
        as a :class:`TeacherSupernet`; ConfigError when ctx names no teacher run, NaskdError when its depth
        is not this space's L."""
        where = f"the supernet of search space {self.name}"
        base = truncated_teacher(_need_dir(ctx, where), self.teacher_layers, dropout=ctx.dropout)
        if base.num_layers != self.teacher_layers:      # pragma: no cover - truncated_teacher refuses k > L
            raise NaskdError(f"{where}: the teacher has {base.num_layers} layers, the space {self.teacher_layers}")
        net = TeacherSupernet(base.encoder, base.kind, base.num_labels, base.pooling, ctx.dropout)
        net.load_state_dict(base.state_dict(), strict=True)
        net.train(base.training)
        return net

    def build_student(self, genotype: TeacherGenotype, ctx: BuildContext) -> TruncatedTeacher:
        """``truncated_teacher(ctx.teacher_dir, genotype.k)``: the teacher's first k layers, its embeddings
        and head, with the fine-tuned weights (head dropout ``ctx.dropout``), as `naskd retrain --student
        truncated_teacher --truncate-k k` builds it."""
        g = self._check_genotype(genotype)
        return truncated_teacher(_need_dir(ctx, f"a student of search space {self.name}"), g.k, dropout=ctx.dropout)

    def fixed_shape(self, genotype=None) -> tuple[int, int] | None:
        """(k, the teacher's hidden width) for a genotype, when the space knows the width (it was read with
        a ctx naming the teacher run); None without a genotype (depth varies)."""
        if genotype is None or self.hidden is None:
            return None
        return self._check_genotype(genotype).k, self.hidden

    # --- latency ------------------------------------------------------------------------------
    def latency_parts(self, genotype: TeacherGenotype, ctx: BuildContext) -> list[Part]:
        """``teacher:embed:SIG``, ``teacher:layer:SIG`` k times, ``teacher:head:SIG:KIND:POOLING:C``: the
        whole forward of the student of ``genotype`` (SIG from the teacher run's config.json)."""
        g = self._check_genotype(genotype)
        sig, info = _signature(_need_dir(ctx, "latency parts of the teacher space"))
        return [Part(f"teacher:embed:{sig}"), Part(f"teacher:layer:{sig}", g.k),
                Part(f"teacher:head:{sig}:{info['kind']}:{info.get('pooling', 'mean')}:{info['num_labels']}")]

    def part_module(self, key: str, ctx: BuildContext):
        """``(module, input_width)`` for a key of :meth:`latency_parts`, built from the teacher run of
        ``ctx`` (its fine-tuned modules, eval mode, CPU): ``teacher:embed`` takes ``(input_ids,
        attention_mask)`` (input width 0), the others ``(x, mask)`` with x (B, L, H) float, mask (B, L).
        ConfigError for another key, or one whose signature is not this teacher's."""
        teacher_dir = _need_dir(ctx, "latency parts of the teacher space")
        sig, info = _signature(teacher_dir)
        head_tail = f"{info['kind']}:{info.get('pooling', 'mean')}:{info['num_labels']}"
        wanted = {f"teacher:embed:{sig}": "embed", f"teacher:layer:{sig}": "layer",
                  f"teacher:head:{sig}:{head_tail}": "head"}
        if key not in wanted:
            raise ConfigError(f"'{key}' is not a latency part of the teacher {teacher_dir}; its parts are "
                              f"{', '.join(wanted)}")
        one = truncated_teacher(teacher_dir, 1).eval()
        hidden = one.hidden_size
        part = wanted[key]
        if part == "embed":
            return _EmbedPart(one).eval(), 0
        if part == "layer":
            return _LayerPart(one).eval(), hidden
        return _HeadPart(one).eval(), hidden


def _signature(teacher_dir: Path) -> tuple[str, dict]:
    """(``MODEL_TYPE:HIDDEN:HEADS:INTERMEDIATE``, teacher.json) of a teacher run."""
    from transformers import AutoConfig

    from ..teachers.model import read_teacher_info

    info = read_teacher_info(teacher_dir)
    c = AutoConfig.from_pretrained(str(teacher_dir))
    return f"{c.model_type}:{c.hidden_size}:{c.num_attention_heads}:{c.intermediate_size}", info


def layer_list(encoder: nn.Module) -> tuple[nn.Module, str]:
    """(parent module, attribute) of the encoder's ModuleList of transformer layers (``encoder.layer`` of
    BERT-like models, ``transformer.layer`` of DistilBERT, ``layers`` of others)."""
    n = encoder.config.num_hidden_layers
    for name, module in encoder.named_modules():
        last = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.ModuleList) and len(module) == n and last in ("layer", "layers"):
            parent = encoder.get_submodule(name.rsplit(".", 1)[0]) if "." in name else encoder
            return parent, last
    raise NaskdError(f"cannot find the {n} transformer layers of a {type(encoder).__name__}")


class TeacherSupernet(TruncatedTeacher):
    """The whole fine-tuned teacher; ``forward(..., path=g)`` is its early exit after g.k layers.

    The path forward swaps the encoder's layer list for its first k layers while it runs (so it is the
    very code of the truncated student); one model must not run two forwards at once from two threads."""

    def forward(self, input_ids, attention_mask, token_type_ids=None, word_starts=None, word_mask=None,
                path=None, **_):
        """input_ids, attention_mask, token_type_ids (B, L); word_starts, word_mask (B, W) for tagging.
        ``path`` None: all L layers; a :class:`TeacherGenotype` of k <= L: the first k (TypeError or
        ValueError for another, see :meth:`check_path`). Returns ``logits`` (B, C), (B,) for regression or (B, W, T) emissions for tagging, ``states``
        (k + 1) x (B, L, H) (0: the embeddings), ``mask`` (B, L) bool (tagging: ``word_mask``, ``crf``)."""
        if path is None:
            return super().forward(input_ids, attention_mask, token_type_ids, word_starts, word_mask)
        k = self.check_path(path)
        if getattr(self, "_layers_at", None) is None:
            parent, attr = layer_list(self.encoder)
            self._layers_at = (next(n for n, m in self.encoder.named_modules() if m is parent), attr)
        name, attr = self._layers_at
        parent = self.encoder.get_submodule(name) if name else self.encoder
        full = getattr(parent, attr)
        setattr(parent, attr, full[:k])
        try:
            return super().forward(input_ids, attention_mask, token_type_ids, word_starts, word_mask)
        finally:
            setattr(parent, attr, full)

    def check_path(self, g) -> int:
        """``g.k`` when ``g`` is a :class:`TeacherGenotype` of this teacher's depth L; TypeError for another
        type, ValueError for another L."""
        if not isinstance(g, TeacherGenotype):
            raise TypeError(f"a teacher supernet runs teacher genotypes, not {type(g).__name__}")
        if g.teacher_layers != self.num_layers or not 1 <= g.k <= self.num_layers:
            raise ValueError(f"{g} is not a path of a {self.num_layers}-layer teacher")
        return g.k

    @torch.no_grad()
    def student(self, g) -> TruncatedTeacher:
        """The standalone :class:`TruncatedTeacher` of the first ``g.k`` layers with this supernet's current
        weights copied (embeddings, layers 1..k, head, CRF); in eval mode its outputs equal
        ``self(path=g, ...)``'s. In training mode, on this supernet's device and dtype."""
        from transformers import AutoModel

        from ..teachers.model import _drop_pooler

        k = self.check_path(g)
        config = copy.deepcopy(self.encoder.config)
        config.num_hidden_layers = k
        p = next(self.parameters())
        model = TruncatedTeacher(_drop_pooler(AutoModel.from_config(config)), self.kind, self.num_labels,
                                 self.pooling, self.dropout.p)
        model.to(device=p.device, dtype=p.dtype)
        own, src = model.state_dict(), self.state_dict()
        model.load_state_dict({n: src[n] for n in own}, strict=True)
        return model.train()


class _EmbedPart(nn.Module):
    """The teacher's forward without its layers: embeddings and the attention mask (a 0-layer encoder
    with the teacher's embedding weights)."""

    def __init__(self, teacher: TruncatedTeacher):
        super().__init__()
        self.encoder = copy.deepcopy(teacher.encoder)
        p, a = layer_list(self.encoder)
        setattr(p, a, nn.ModuleList())

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state


class _LayerPart(nn.Module):
    """One transformer layer of the teacher; the additive attention mask it reads is built from ``mask``
    once per mask (the real forward builds it once for all layers: that is the embed part's)."""

    def __init__(self, teacher: TruncatedTeacher):
        super().__init__()
        parent, attr = layer_list(teacher.encoder)
        self.layer = getattr(parent, attr)[0]
        self.config = teacher.encoder.config
        self._mask = None

    def attention_mask(self, x, mask):
        key = (mask.data_ptr(), tuple(mask.shape), x.dtype, x.device)
        if self._mask is None or self._mask[0] != key:
            try:
                from transformers.masking_utils import create_bidirectional_mask

                m = create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=mask.long())
            except ImportError:                   # pragma: no cover - older transformers
                m = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
            self._mask = (key, m)
        return self._mask[1]

    def forward(self, x, mask):
        out = self.layer(x, self.attention_mask(x, mask))
        return out[0] if isinstance(out, tuple) else out


class _Passthrough(nn.Module):
    """An encoder stand-in whose last hidden state is its input (so the head part is TeacherModel's own
    head code)."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        return SimpleNamespace(last_hidden_state=input_ids, hidden_states=None)


class _HeadPart(nn.Module):
    """The teacher's pooling (or word gathering: every token a word start) and task head."""

    def __init__(self, teacher: TruncatedTeacher):
        super().__init__()
        from ..teachers.model import TeacherModel

        self.model = TeacherModel(_Passthrough(teacher.encoder.config), teacher.kind, teacher.num_labels,
                                  teacher.pooling, teacher.dropout.p)
        self.model.head.load_state_dict(teacher.head.state_dict())

    def forward(self, x, mask):
        starts = torch.arange(x.size(1), device=x.device).expand(x.size(0), -1)
        return self.model(x, mask, word_starts=starts)["logits"]
