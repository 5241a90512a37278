"""Spaces a one-shot strategy can search: their discrete dimensions, genotypes, weight-sharing supernets,
standalone students and latency parts. One registration per space kind (``cell``, ``macro``, ``teacher``).

A space kind is a subclass of :class:`OneShotSpace` registered with :func:`register_space_kind`; a YAML
file under ``search_spaces/`` names its kind with ``kind:`` (absent: ``cell``, the DARTS cell spaces).

The contract every kind keeps (tests/space/test_oneshot.py runs it for each registered kind):

* ``dimensions()`` is static: every dimension is present for every genotype (a depth-3 genotype still
  has choices for layers 4-6, which it ignores), so Optuna's NSGA-II sees one fixed search space.
* ``from_choices(choices)`` builds the genotype of one value per dimension; ``sample(rng)`` draws each
  dimension uniformly (the one-shot path sampler and the random strategy's proposal).
* ``supernet(ctx)`` holds every genotype's weights; ``net(path=g, **batch)`` runs the single path of ``g``.
  ``net.student(g)`` is the standalone student of ``g`` with the inherited weights: in eval mode its
  outputs equal ``net(path=g, ...)``'s.
* ``build_student(g, ctx)`` is the fresh standalone student that `naskd retrain` trains.
* ``latency_parts(g, ctx)`` lists the parts whose measured times sum to the student's
  (:mod:`naskd.search.lut`); ``part_module(key, ctx)`` builds one part for timing.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from torch import nn

from ..errors import ConfigError, NaskdError

SPACE_KINDS: dict[str, type] = {}


def register_space_kind(cls):
    """Class decorator: make ``cls`` (a :class:`OneShotSpace` with a ``kind`` name) the reader of
    ``kind: <name>`` space files and ``"kind": <name>`` genotypes."""
    SPACE_KINDS[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class BuildContext:
    """What building a student or supernet needs to know of the task and the teacher."""
    kind: str                       # naskd.data.tasks: single, pair, regression, tagging
    num_labels: int
    vocab_size: int
    pair: bool = False              # a sentence-pair task (token_type_ids mark the second sentence)
    teacher_dir: Path | None = None  # a teacher run: embedding tables (and, for the teacher space, layers)
    teacher_layers: int | None = None
    dropout: float = 0.1
    max_positions: int = 512
    seed: int = 0

    @classmethod
    def for_task(cls, spec, vocab_size: int, teacher_dir=None, teacher_info: dict | None = None, **kw):
        layers = int(teacher_info["num_layers"]) if teacher_info else None
        return cls(kind=spec.kind, num_labels=spec.num_labels, vocab_size=vocab_size, pair=spec.is_pair,
                   teacher_dir=None if teacher_dir is None else Path(teacher_dir), teacher_layers=layers, **kw)


@dataclass(frozen=True)
class Part:
    """One timed piece of a student: ``key`` names its configuration completely (op, widths, heads...),
    so equal keys take equal time; ``count`` how many times the student runs it."""
    key: str
    count: int = 1


class OneShotSpace(abc.ABC):
    kind: str = ""
    name: str = ""
    source: str = ""
    description: str = ""

    @classmethod
    @abc.abstractmethod
    def from_yaml(cls, data: dict, source: str, ctx: "BuildContext | None" = None) -> "OneShotSpace":
        """The space a search_spaces/ file declares (``data`` its mapping, ``source`` its path, for
        messages). ``ctx`` when the space depends on the task or teacher (the teacher space's depth)."""

    # the genotype dataclass of this kind (each kind sets it): ``from_dict(d, source)``, ``to_dict()`` (with
    # ``"kind"``), ``describe()``, ``save(path)``
    genotype_class: type

    # --- the discrete space -------------------------------------------------------------------
    @abc.abstractmethod
    def dimensions(self) -> dict[str, tuple]:
        """Ordered ``{dimension name: options}``, options JSON scalars (str/int/bool)."""

    @abc.abstractmethod
    def from_choices(self, choices: Mapping[str, Any]):
        """The genotype of one option per dimension (a ConfigError naming a missing or unknown value)."""

    @abc.abstractmethod
    def choices_of(self, genotype) -> dict:
        """The inverse of :meth:`from_choices` on the dimensions the genotype uses; the unused ones get
        their first option (so a genotype can be enqueued into an Optuna study)."""

    def sample(self, rng: np.random.Generator):
        """Each dimension uniformly from its options (``rng`` a numpy Generator)."""
        return self.from_choices({k: v[int(rng.integers(len(v)))] for k, v in self.dimensions().items()})

    def size(self) -> int:
        """Number of distinct genotypes (counting only the dimensions each uses is the subclass's call;
        this is the product of the options, an upper bound)."""
        n = 1
        for v in self.dimensions().values():
            n *= len(v)
        return n

    @abc.abstractmethod
    def check(self) -> None:
        """Raise ConfigError, naming the space file and the choice, when some choice cannot build (a width
        not divisible by a head count, zero layers, an unknown op)."""

    @abc.abstractmethod
    def contains(self, genotype) -> bool:
        """True when ``genotype`` is one of this space's."""

    # --- genotypes ----------------------------------------------------------------------------
    @abc.abstractmethod
    def genotype_from_dict(self, d: dict, source: str = "genotype"):
        """A genotype of this kind from JSON (NaskdError naming ``source`` when malformed)."""

    def describe(self, genotype) -> str:
        return genotype.describe()

    # --- models -------------------------------------------------------------------------------
    @abc.abstractmethod
    def supernet(self, ctx: BuildContext) -> nn.Module:
        """The weight-sharing supernet (embeddings initialised from ``ctx.teacher_dir`` when given)."""

    @abc.abstractmethod
    def build_student(self, genotype, ctx: BuildContext) -> nn.Module:
        """A fresh standalone student of ``genotype`` (embeddings initialised from the teacher when given)."""

    def fixed_shape(self, genotype=None) -> tuple[int, int] | None:
        """(layers, width) when every student of the space has them (intermediate-layer criteria such as
        PKD need them); None when depth or width vary."""
        return None

    # --- latency ------------------------------------------------------------------------------
    @abc.abstractmethod
    def latency_parts(self, genotype, ctx: BuildContext) -> list[Part]:
        """The parts whose times sum to the student's forward time."""

    @abc.abstractmethod
    def part_module(self, key: str, ctx: BuildContext):
        """``(module, input_width)`` for the part ``key``: the module takes ``(x, mask)`` with x (B, L,
        input_width) float, or, for an input part (``input_width`` 0), ``(input_ids, attention_mask)``."""

    def to_dict(self) -> dict:
        raise NotImplementedError


def space_kind(name: str) -> type:
    if name not in SPACE_KINDS:
        _load_kinds()
    try:
        return SPACE_KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown space kind '{name}'; known: {', '.join(sorted(SPACE_KINDS))}") from None


def _load_kinds() -> None:
    """Import the modules that register the built-in kinds."""
    import importlib

    for mod in ("naskd.space.cell_oneshot", "naskd.space.macro", "naskd.space.teacher_space"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def load_oneshot_space(name_or_path: str, *, ctx: BuildContext | None = None) -> OneShotSpace:
    """The space ``name_or_path`` names (a file in search_spaces/ or a YAML path), as a one-shot space
    of the kind its ``kind:`` key gives (``cell`` when absent)."""
    from ..assets import asset_path
    from ..config import load_yaml

    p = asset_path("search_spaces", name_or_path)
    data = load_yaml(p)
    kind = data.get("kind", "cell")
    if kind == "cell":                        # the DARTS cell files predate the kind key
        data = {k: v for k, v in data.items() if k != "kind"}
    return space_kind(kind).from_yaml(data, str(p), ctx=ctx)


def genotype_kind(d: Any) -> str:
    return d.get("kind", "cell") if isinstance(d, dict) else "cell"


def load_genotype(path) -> Any:
    """The genotype in the JSON file ``path``, of whichever space kind its ``"kind"`` says (``cell``:
    :class:`naskd.genotype.Genotype`). A file holding one under ``"genotype"`` is read too."""
    from ..genotype import Genotype, read_genotype_json

    d = read_genotype_json(path)
    kind = genotype_kind(d)
    if kind == "cell":
        return Genotype.from_dict(d, str(path))
    try:
        cls = space_kind(kind)
    except ConfigError:
        raise NaskdError(f"{path} is not a valid genotype: unknown kind '{kind}' (known: "
                         f"{', '.join(sorted(SPACE_KINDS))})") from None
    return cls.genotype_class.from_dict(d, str(path))
