"""Latency-aware search: a table of batch-1 forward times of every op and aggregator on this machine,
the latency of a derived student estimated from it, and its differentiable expectation under the alphas
(in the spirit of FBNet and ProxylessNAS, which add a latency term to the architecture objective).

The estimate of a genotype is the measured time of its skeleton (embeddings, the cells' LayerNorms and
residual sums, final norm, head: a student whose every edge is ``identity``) plus, for each chosen edge,
its op's time less identity's, plus the aggregator's time less the skeleton's. The expectation under
the alphas follows how :func:`naskd.genotype.parse` derives a cell: each node keeps ``k`` of its incoming
edges, and a node costs ``min(k, inputs)`` times the mean of its edges' costs.

An edge costs the mean time of its *parametric* ops (not ``none``, not identity or pooling) weighted by
their softmax weights renormalised among them, which is the softmax over their alphas alone. So the
latency term never moves a parameter-free op's alpha: it chooses among ops that learn, by cost, and
leaves "learn nothing here" to the task loss. Counting identity as a cheap op made the first real search
(SST-2, a 5x target) collapse onto all-identity cells within an epoch: the penalty fed DARTS' known drift
toward parameter-free ops. The expectation is then the estimate of the student whose every kept edge
holds a parametric op, an upper bound on a derived student that keeps identities (equal when it keeps
none).

The penalty added to the architecture loss is ``weight * relu(E[latency] / target - 1)``, applied only
while the student the alphas derive now (argmax, top-k edges) is estimated over the target: the derived
student is what ships, and the mixture's expectation stays far above it while the alphas are near
uniform, so a penalty on the expectation alone keeps pushing long after the derived cell is fast enough
(on SST-2 at a 4x target it drove every edge to the cheapest op by the first epoch). Once the derived
student is within the target the task loss alone chooses; if it drifts back over, the push resumes.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from ..errors import ConfigError
from ..network import edge_list

FORMAT = 1
SKELETON_EDGES = 2                    # identity edges per node in the measured skeleton (every node reads two)


@dataclass
class LatencyTable:
    """Milliseconds per forward at batch 1 and ``length`` tokens, width ``width``."""
    ops: dict                         # op name -> ms (none: 0)
    aggregators: dict                 # aggregator name -> ms ({} for taggers)
    skeleton_ms: float                # embeddings, final norm, head and the first aggregator: no cells
    cell_skeleton_ms: float           # what one all-identity cell adds (its norms and residual sums)
    skeleton_aggregator: str | None
    length: int
    width: int
    device: str = "cpu"
    threads: int = 1
    teacher_ms: float | None = None   # the teacher at the same length, when measured
    note: str = field(default="")

    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict, source: str = "latency table") -> "LatencyTable":
        try:
            return cls(ops={str(k): float(v) for k, v in d["ops"].items()},
                       aggregators={str(k): float(v) for k, v in d.get("aggregators", {}).items()},
                       skeleton_ms=float(d["skeleton_ms"]), cell_skeleton_ms=float(d.get("cell_skeleton_ms", 0.0)),
                       skeleton_aggregator=d.get("skeleton_aggregator"),
                       length=int(d["length"]), width=int(d["width"]), device=str(d.get("device", "cpu")),
                       threads=int(d.get("threads", 1)),
                       teacher_ms=None if d.get("teacher_ms") is None else float(d["teacher_ms"]),
                       note=str(d.get("note", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{source}: not a latency table ({type(e).__name__}: {e}); it needs 'ops' "
                              "(name -> ms), 'skeleton_ms', 'length' and 'width', as `naskd search` writes "
                              "to latency.json") from None

    @classmethod
    def load(cls, path) -> "LatencyTable":
        from ..utils.io import read_json

        d = read_json(path, missing=f"latency table {path} does not exist (a `naskd search` run with --latency-* "
                                    "writes latency.json)", error=ConfigError)
        return cls.from_dict(d, str(path))

    def check(self, space, source: str = "latency table") -> None:
        """Every op and aggregator of ``space`` must have a time, ``identity`` included (the skeleton's edge)."""
        missing = [o for o in list(space.ops) + ["identity"] if o != "none" and o not in self.ops]
        missing += [a for a in space.aggregators if self.aggregators and a not in self.aggregators]
        if missing:
            raise ConfigError(f"{source} has no time for {', '.join(sorted(set(missing)))}; profile this space "
                              "(leave out --latency-table) or add them")
        bad = [k for k, v in {**self.ops, **self.aggregators, "skeleton_ms": self.skeleton_ms,
                              "cell_skeleton_ms": self.cell_skeleton_ms}.items()
               if not (v >= 0 and v < float("inf"))]
        if bad:
            raise ConfigError(f"{source}: times must be finite and >= 0, not for {', '.join(bad)}")

    def op_ms(self, name: str) -> float:
        return 0.0 if name == "none" else self.ops[name]


def _median_ms(fn, repeat: int, warmup: int = 3) -> float:
    from ..utils.runtime import median_seconds

    with torch.no_grad():
        return 1e3 * median_seconds(fn, repeat, warmup)


def profile_latency(space, *, width: int, length: int, kind: str, num_labels: int, vocab_size: int,
                    repeat: int = 30, device="cpu", teacher=None) -> LatencyTable:
    """Measure every op, aggregator and the skeleton at batch 1 on ``device`` (eval mode, no grad);
    ``teacher`` (a model taking input_ids/attention_mask), when given, is timed at the same length."""
    from ..data.tasks import TAGGING
    from ..genotype import Genotype
    from ..space.aggregators import build_aggregator
    from ..space.ops import build_op
    from ..students.fixed import FixedStudent

    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, length, width, generator=g).to(device)
    mask = torch.ones(1, length, dtype=torch.bool, device=device)
    ops = {}
    for name in dict.fromkeys(list(space.ops) + ["identity"]):
        if name == "none":
            ops[name] = 0.0
            continue
        op = build_op(name, width).to(device).eval()
        ops[name] = _median_ms(lambda: op(x, mask), repeat)
    aggs = {}
    if kind != TAGGING:
        for name in space.aggregators:
            agg = build_aggregator(name, width).to(device).eval()
            aggs[name] = _median_ms(lambda: agg(x, mask), repeat)
    skel_agg = space.aggregators[0] if kind != TAGGING and space.aggregators else None
    cell = tuple(tuple(("identity", j) for j in range(SKELETON_EDGES)) for _ in range(space.nodes))
    ids = torch.randint(1000, 2000, (1, length), generator=g).to(device)
    am = torch.ones(1, length, dtype=torch.long, device=device)
    extra = {}
    if kind == TAGGING:
        extra = {"word_starts": torch.arange(length, device=device)[None], "word_mask": mask}

    def skeleton_ms(layers: int) -> float:
        """An all-identity student of ``layers`` cells."""
        g_ = Genotype(space.name, tuple(space.ops), tuple(space.aggregators), space.nodes, layers, width, (cell,),
                      skel_agg)
        student = FixedStudent(g_, kind=kind, num_labels=num_labels, vocab_size=vocab_size).to(device).eval()
        return _median_ms(lambda: student(input_ids=ids, attention_mask=am, **extra), repeat)

    # students of one and of two all-identity cells: the second cell's extra time is a cell's skeleton
    one_cell = skeleton_ms(1)
    per_cell = max(0.0, skeleton_ms(2) - one_cell)
    teacher_ms = None
    if teacher is not None:
        teacher = teacher.to(device).eval()
        teacher_ms = _median_ms(lambda: teacher(input_ids=ids, attention_mask=am, **extra), repeat)
    return LatencyTable(ops=ops, aggregators=aggs, skeleton_ms=max(0.0, one_cell - per_cell),
                        cell_skeleton_ms=per_cell, skeleton_aggregator=skel_agg, length=length, width=width,
                        device=str(device), threads=torch.get_num_threads(), teacher_ms=teacher_ms,
                        note=f"median of {repeat} batch-1 forwards at {length} tokens")


def genotype_latency(genotype, table: LatencyTable) -> float:
    """Estimated batch-1 milliseconds of the student ``genotype`` describes (the table's length and width)."""
    ident = table.ops["identity"]
    total = table.skeleton_ms
    for c in range(genotype.layers):
        cell = genotype.cell(c)
        total += table.cell_skeleton_ms
        for node in cell:
            total += sum(table.op_ms(op) for op, _ in node) - SKELETON_EDGES * ident
    if genotype.aggregator and table.skeleton_aggregator:
        total += table.aggregators[genotype.aggregator] - table.aggregators[table.skeleton_aggregator]
    return float(total)


def expected_latency(op_alphas: torch.Tensor, agg_weights: torch.Tensor | None, space, table: LatencyTable, *,
                     layers: int, k: int = 2) -> torch.Tensor:
    """Differentiable expectation of :func:`genotype_latency` under the architecture: ``op_alphas`` the op
    logits (E, K) shared or (layers, E, K) per cell (a softmax over the parametric ops' logits alone, so
    the others get exactly no gradient; Adam would turn even rounding noise into full steps);
    ``agg_weights`` the aggregator weights (A,), or None/empty for taggers."""
    from ..space.ops import is_parameter_free

    names = list(space.ops)
    learn = [i for i, n in enumerate(names) if n != "none" and not is_parameter_free(n)]
    if not learn:                      # a space of parameter-free ops only: every op but none counts
        learn = [i for i, n in enumerate(names) if n != "none"]
    t = torch.tensor([table.op_ms(names[i]) for i in learn], dtype=op_alphas.dtype, device=op_alphas.device)
    idx = torch.tensor(learn, device=op_alphas.device)
    edge_cost = (torch.softmax(op_alphas.index_select(-1, idx), dim=-1) * t).sum(-1)       # (..., E)
    edges = edge_list(space.nodes)
    ident = table.ops["identity"]
    rows = edge_cost if edge_cost.dim() == 2 else edge_cost[None]   # one row per cell, or one shared by all
    cell_cost = rows.new_full((rows.size(0),), table.cell_skeleton_ms)
    for i in range(space.nodes):
        idx = [e for e, (node, _) in enumerate(edges) if node == i]
        cell_cost = cell_cost + min(k, len(idx)) * rows[:, idx].mean(-1) - SKELETON_EDGES * ident
    total = table.skeleton_ms + (cell_cost.sum() if edge_cost.dim() == 2 else layers * cell_cost[0])
    if agg_weights is not None and agg_weights.numel() and table.skeleton_aggregator:
        ta = torch.tensor([table.aggregators[a] for a in space.aggregators], dtype=agg_weights.dtype,
                          device=agg_weights.device)
        total = total + (agg_weights * ta).sum() - table.aggregators[table.skeleton_aggregator]
    return total


def latency_penalty(expected: torch.Tensor, target_ms: float, weight: float) -> torch.Tensor:
    """weight * relu(expected / target - 1): zero within the target."""
    return weight * torch.relu(expected / target_ms - 1.0)
