"""Pictures of search results: the found cell (networkx + matplotlib) and alphas over the epochs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import numpy as np  # noqa: E402

from .errors import NaskdError  # noqa: E402
from .genotype import Genotype  # noqa: E402
from .network import edge_list  # noqa: E402


def cell_graph(genotype: Genotype, cell: int = 0) -> nx.DiGraph:
    """Inputs c_{k-2}, c_{k-1}; intermediate nodes 0..N-1; output c_{k}; edges carry their op."""
    g = nx.DiGraph()
    inputs = ["c_{k-2}", "c_{k-1}"]
    names = inputs + [str(i) for i in range(genotype.nodes)]
    for n in inputs:
        g.add_node(n, kind="input")
    for i in range(genotype.nodes):
        g.add_node(str(i), kind="node")
    g.add_node("c_{k}", kind="output")
    for i, node in enumerate(genotype.cell(cell)):
        for op, j in node:
            g.add_edge(names[j], str(i), op=op)
        g.add_edge(str(i), "c_{k}", op="concat")
    return g


def image_format(path: str | os.PathLike) -> str:
    """The image format of ``path``'s suffix (PNG without one); :class:`NaskdError` listing matplotlib's
    formats when it has none of them."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    known = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    if fmt not in known:
        raise NaskdError(f"{path}: matplotlib cannot write .{fmt} files; use one of "
                         f"{', '.join(sorted(known))} (e.g. -o cell.png)")
    return fmt


def _save(fig, path):
    """Write ``fig`` to ``path`` atomically (a temporary file in the same folder, renamed into place)."""
    from .utils.io import writing

    path = Path(path)
    try:
        with writing(path) as tmp:
            fig.savefig(tmp, format=image_format(path), dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_cell(genotype: Genotype, path: str | os.PathLike) -> list[nx.DiGraph]:
    cells = list(range(len(genotype.cells)))
    fig, axes = plt.subplots(1, len(cells), figsize=(6.5 * len(cells), 4.5), squeeze=False)
    graphs = []
    for ax, c in zip(axes[0], cells):
        g = cell_graph(genotype, c)
        graphs.append(g)
        layers = {"c_{k-2}": 0, "c_{k-1}": 0, "c_{k}": genotype.nodes + 1}
        for i in range(genotype.nodes):
            layers[str(i)] = i + 1
        nx.set_node_attributes(g, layers, "layer")
        pos = nx.multipartite_layout(g, subset_key="layer")
        colours = {"input": "#9ecae1", "node": "#fdd0a2", "output": "#a1d99b"}
        nx.draw_networkx_nodes(g, pos, ax=ax, node_size=1400,
                               node_color=[colours[g.nodes[n]["kind"]] for n in g.nodes])
        nx.draw_networkx_labels(g, pos, ax=ax, labels={n: f"${n}$" if n.startswith("c_") else n for n in g.nodes},
                                font_size=10)
        nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=14, node_size=1400,
                               connectionstyle="arc3,rad=0.12")
        nx.draw_networkx_edge_labels(g, pos, ax=ax, font_size=8, connectionstyle="arc3,rad=0.12",
                                     edge_labels={(u, v): d["op"] for u, v, d in g.edges(data=True)
                                                  if d["op"] != "concat"})
        title = f"cell {c}" if len(cells) > 1 else f"{genotype.space} cell (shared by {genotype.layers} layers)"
        ax.set_title(title)
        ax.axis("off")
    agg = f"aggregation: {genotype.aggregator}" if genotype.aggregator else "no aggregation (tagging)"
    fig.suptitle(f"{agg}; width {genotype.width}", y=0.02)
    _save(fig, path)
    return graphs


def _history_alphas(history, source: str, cell: int) -> tuple[np.ndarray, list, int]:
    """(alphas (epochs, edges, ops), op names, nodes) of a search history, or :class:`NaskdError` naming
    ``source`` and what is wrong with it."""
    where = f"{source} is not the history.json of a `naskd search` run"
    if not isinstance(history, list):
        raise NaskdError(f"{where}: it holds a JSON {type(history).__name__}, not a list of epochs")
    if not history:
        raise NaskdError("the search history is empty: no epoch has finished yet")
    for i, h in enumerate(history):
        ok = (isinstance(h, dict) and "epoch" in h and isinstance(h.get("alphas"), dict)
              and isinstance(h["alphas"].get("ops"), list) and isinstance(h["alphas"].get("op_names"), list)
              and isinstance(h.get("genotype"), dict) and isinstance(h["genotype"].get("nodes"), int)
              and not isinstance(h["genotype"]["nodes"], bool) and h["genotype"]["nodes"] >= 1)
        if not ok:
            raise NaskdError(f"{where}: epoch entry {i} lacks epoch, alphas.ops, alphas.op_names or a "
                             "genotype with nodes >= 1")
    op_names = history[0]["alphas"]["op_names"]
    nodes = history[0]["genotype"]["nodes"]
    try:
        arr = np.asarray([h["alphas"]["ops"] for h in history], dtype=float)
    except (ValueError, TypeError):
        raise NaskdError(f"{where}: the epochs' alphas.ops are not number arrays of one shape") from None
    if arr.ndim == 4:                                     # per-cell alphas: (epochs, layers, edges, ops)
        if not 0 <= cell < arr.shape[1]:
            raise NaskdError(f"{source}: cell {cell} asked for, the history has cells 0..{arr.shape[1] - 1}")
        arr = arr[:, cell]
    if arr.ndim != 3 or arr.shape[1] != len(edge_list(nodes)) or arr.shape[2] != len(op_names):
        raise NaskdError(f"{where}: alphas of shape {arr.shape[1:]} do not fit {nodes} nodes "
                         f"({len(edge_list(nodes))} edges) and {len(op_names)} ops")
    return arr, op_names, nodes


def plot_alphas(history: list[dict], path: str | os.PathLike, cell: int = 0, *,
                source: str = "the search history") -> np.ndarray:
    """Heat map per edge: op weight (softmax of alphas) over the search epochs. Returns the array
    (epochs, edges, ops) that was drawn. :class:`NaskdError` (naming ``source``) when ``history`` is
    empty or not a search history."""
    arr, op_names, nodes = _history_alphas(history, source, cell)
    E = arr.shape[1]
    edges = edge_list(nodes)
    cols = min(E, 3)
    rows = int(np.ceil(E / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.1 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.75, wspace=0.5)
    epochs = [h["epoch"] for h in history]
    for e in range(rows * cols):
        ax = axes[e // cols][e % cols]
        if e >= E:
            ax.axis("off")
            continue
        im = ax.imshow(arr[:, e, :].T, aspect="auto", cmap="viridis", vmin=0, vmax=max(0.3, arr.max()))
        i, j = edges[e]
        src = ["c_{k-2}", "c_{k-1}"][j] if j < 2 else f"node {j - 2}"
        ax.set_title(f"{src} -> node {i}", fontsize=9)
        ax.set_yticks(range(len(op_names)))
        ax.set_yticklabels(op_names, fontsize=7)
        ax.set_xticks(range(len(epochs)))
        ax.set_xticklabels(epochs, fontsize=7)
        ax.set_xlabel("epoch", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.6, label="op weight (softmax of alpha)")
    _save(fig, path)
    return arr


def plot_path(target: str | os.PathLike, out: str | os.PathLike, alphas: bool = False, *,
              overwrite: bool = False) -> str:
    """CLI entry: a genotype.json (cell) or a search run directory (cell, or alphas with ``alphas``), drawn
    to the image file ``out`` (its suffix names the format; written atomically). :class:`NaskdError`, before
    anything is read or drawn, for a format matplotlib cannot write, an ``out`` that exists (without
    ``overwrite``), is a directory or cannot be written; then for a missing or malformed input."""
    from .utils.rundir import check_output_file

    image_format(out)
    check_output_file(out, overwrite=overwrite)
    target = Path(target)
    if alphas:
        hist_path = target / "history.json" if target.is_dir() else target
        if not hist_path.is_file():
            raise NaskdError(f"{hist_path} not found: --alphas needs a search run directory with history.json")
        try:
            history = json.loads(hist_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:          # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise NaskdError(f"{hist_path} cannot be read as JSON ({type(e).__name__}: {str(e)[:120]}); name the "
                             "history.json of a `naskd search` run") from None
        plot_alphas(history, out, source=str(hist_path))
    else:
        from .space.oneshot import load_genotype

        gpath = target / "genotype.json" if target.is_dir() else target
        g = load_genotype(gpath)
        if isinstance(g, Genotype):
            plot_cell(g, out)
        else:
            plot_stack(stack_of(g), out, title=g.describe())
    return str(out)


def stack_of(g) -> list[str]:
    """The boxes, input to output, of a macro or teacher-space genotype."""
    d = g.to_dict()
    if d.get("kind") == "macro":
        return ([f"word embeddings ({g.embed})"] + [f"{op} -> {w}" for op, w in g.layers]
                + [f"pooling: {g.pooling}", f"ReLU {g.classifier}", "logits"])
    return (["teacher embeddings"] + [f"teacher layer {i + 1}" for i in range(g.k)]
            + ["pooling and head (the teacher's)"])


def plot_stack(boxes: list[str], out: str | os.PathLike, *, title: str = "") -> None:
    """A column of boxes joined by arrows (a macro or truncated-teacher student), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .utils.io import atomic_path

    fig, ax = plt.subplots(figsize=(4, 0.7 * len(boxes) + 0.8))
    n = len(boxes)
    for i, text in enumerate(boxes):
        y = n - 1 - i
        ax.text(0.5, y, text, ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "round,pad=0.4", "fc": "#e8eef4", "ec": "#33506b"})
        if i:
            ax.annotate("", xy=(0.5, y + 0.25), xytext=(0.5, y + 0.75), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, n - 0.4)
    ax.axis("off")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(out)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=image_format(path))
    plt.close(fig)
