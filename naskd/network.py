"""Pieces shared by the supernet and the fixed students: embeddings, the cell skeleton, task heads.

Shapes: B batch, L tokens, D width. ``mask`` (B, L) bool marks real tokens.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .data.tasks import REGRESSION, TAGGING
from .records import ModelOutput
from .space.ops import Tokens, zero_padding


def edge_list(nodes: int) -> list[tuple[int, int]]:
    """DARTS edges (node i, input j): node i (0-based) reads the two cell inputs and nodes < i."""
    return [(i, j) for i in range(nodes) for j in range(i + 2)]


class Embeddings(nn.Module):
    """WordPiece + position + segment embeddings, LayerNorm, dropout (BERT's layout at width D).

    With ``embed_width`` E != D the tables are E wide and a linear map takes their normalised sum to D
    (ALBERT's factorised embeddings): a narrow student keeps more of the teacher's lexical table for
    E * D more (non-embedding) parameters."""

    def __init__(self, vocab_size: int, width: int, max_positions: int = 512, type_vocab: int = 2,
                 dropout: float = 0.1, embed_width: int | None = None):
        super().__init__()
        e = embed_width or width
        self.word = nn.Embedding(vocab_size, e, padding_idx=0)
        self.position = nn.Embedding(max_positions, e)
        self.segment = nn.Embedding(type_vocab, e)
        self.norm = nn.LayerNorm(e)
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(e, width) if e != width else None

    @property
    def embed_width(self) -> int:
        return self.word.embedding_dim

    def forward(self, input_ids, token_type_ids=None):
        pos = torch.arange(input_ids.size(1), device=input_ids.device)
        h = self.word(input_ids) + self.position(pos)[None]
        if token_type_ids is not None:
            h = h + self.segment(token_type_ids)
        h = self.dropout(self.norm(h))                                      # (B, L, E)
        return h if self.up is None else self.up(h)                         # (B, L, D)

    @torch.no_grad()
    def init_from_teacher(self, teacher: dict[str, torch.Tensor]) -> str:
        """Copy the teacher's embedding tables, projected onto their top principal directions when the
        student is narrower (PCA of the word embeddings). Returns a one-line account of what was done."""
        W = teacher["word"].float()
        if W.size(0) != self.word.num_embeddings:
            raise ValueError(f"teacher vocabulary {W.size(0)} != student vocabulary {self.word.num_embeddings}")
        proj, how = width_projection(W, self.word.embedding_dim)
        d_t, d_s = W.size(1), self.word.embedding_dim
        self.word.weight.copy_(W @ proj)
        n_pos = min(self.position.num_embeddings, teacher["position"].size(0))
        self.position.weight[:n_pos].copy_(teacher["position"][:n_pos].float() @ proj)
        n_seg = min(self.segment.num_embeddings, teacher["segment"].size(0))
        self.segment.weight[:n_seg].copy_(teacher["segment"][:n_seg].float() @ proj)
        return f"embeddings initialised from the teacher's ({d_t} -> {d_s}, {how})"


def width_projection(W: torch.Tensor, d_s: int) -> tuple[torch.Tensor, str]:
    """(D_t, d_s) map from the teacher's embedding width to the student's: identity padded with zeros
    when the student is as wide or wider, else the top principal directions of the rows of W."""
    d_t = W.size(1)
    if d_s >= d_t:
        proj = torch.zeros(d_t, d_s)
        proj[:, :d_t] = torch.eye(d_t)
        return proj, "copied"
    centred = W - W.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[:d_s].T, f"projected onto {d_s} principal directions"


@torch.no_grad()
def init_word_table(word: nn.Embedding, tables: dict[str, torch.Tensor]) -> str:
    """Copy the teacher's word table ``tables["word"]`` (V, D_t) into ``word`` (V, E) through
    :func:`width_projection` (PCA-projected when E < D_t); ValueError when the vocabularies differ. Returns a
    note for the log."""
    W = tables["word"].float()
    if W.size(0) != word.num_embeddings:
        raise ValueError(f"teacher vocabulary {W.size(0)} != student vocabulary {word.num_embeddings}")
    proj, how = width_projection(W, word.embedding_dim)
    word.weight.copy_((W @ proj).to(word.weight))
    return f"word embeddings initialised from the teacher's ({W.size(1)} -> {word.embedding_dim}, {how})"


def teacher_embedding_tables(teacher_dir: str | Path) -> dict[str, torch.Tensor]:
    """Read the word, position and segment tables from a teacher's safetensors file, nothing else (an
    ensemble teacher's: its first member's)."""
    from safetensors import safe_open

    if not (Path(teacher_dir) / "model.safetensors").is_file():
        from .teachers.model import read_teacher_info

        members = read_teacher_info(teacher_dir).get("ensemble")
        if members:
            return teacher_embedding_tables(members[0])

    want = {"word": "word_embeddings.weight", "position": "position_embeddings.weight",
            "segment": "token_type_embeddings.weight"}
    out = {}
    with safe_open(str(Path(teacher_dir) / "model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        for name, suffix in want.items():
            hits = [k for k in keys if k.endswith(suffix)]
            if hits:
                out[name] = f.get_tensor(hits[0])
    if "word" not in out:
        raise ValueError(f"{teacher_dir}: no word embedding table found in model.safetensors")
    out.setdefault("position", torch.zeros(0, out["word"].size(1)))
    out.setdefault("segment", torch.zeros(0, out["word"].size(1)))
    return out


class CellBase(nn.Module):
    """DARTS cell skeleton: inputs c_{k-2}, c_{k-1}, each LayerNorm-ed and linearly preprocessed;
    ``nodes`` intermediate nodes each summing its incoming edges; output = c_{k-1} + W [n_1; ...; n_N].

    The residual stream is normalised at the cell inputs (pre-LN), not after the sum: a stack of six
    post-LN cells trained from scratch without warm-up stayed at chance on SST-2 for hundreds of steps,
    the pre-LN stack learns at once. The network normalises the last cell's output before its head.
    Subclasses define the edges."""

    def __init__(self, width: int, nodes: int, dropout: float = 0.1):
        super().__init__()
        self.nodes = nodes
        self.norm0 = nn.LayerNorm(width)
        self.norm1 = nn.LayerNorm(width)
        self.pre0 = nn.Linear(width, width)
        self.pre1 = nn.Linear(width, width)
        self.out = nn.Linear(nodes * width, width)
        self.dropout = nn.Dropout(dropout)

    def node(self, i: int, states: list, mask, weights):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, s0, s1, mask, weights=None):
        states = [self.pre0(self.norm0(s0)), self.pre1(self.norm1(s1))]
        for i in range(self.nodes):
            states.append(self.node(i, states, mask, weights))
        y = s1 + self.dropout(self.out(torch.cat(states[2:], dim=-1)))
        return zero_padding(y, mask)                                        # (B, L, D)


class Head(nn.Module):
    """Sentence tasks: aggregated (B, D) -> logits (B, C) (or (B,) for regression).
    Tagging: token states gathered at each word's first sub-token -> emissions (B, W, T)."""

    def __init__(self, kind: str, width: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(width, num_labels)

    def forward(self, pooled=None, states=None, word_starts=None):
        if self.kind == TAGGING:
            idx = word_starts.unsqueeze(-1).expand(-1, -1, states.size(-1))
            return self.proj(self.dropout(torch.gather(states, 1, idx)))
        logits = self.proj(self.dropout(pooled))
        return logits.squeeze(-1) if self.kind == REGRESSION else logits




def cell_network_forward(net: nn.Module, input_ids, attention_mask, token_type_ids, word_starts, word_mask, *,
                         run_cell, pool) -> ModelOutput:
    """The forward pass of a stack of cells, shared by :class:`~naskd.students.fixed.FixedStudent` and the
    DARTS :class:`~naskd.supernet.model.Supernet` (``net`` has ``embeddings``, ``cells``, ``final_norm``,
    ``head``, ``kind`` and ``crf``): embeddings, then ``run_cell(c, cell, s0, s1, tokens)`` for each cell c
    (the input of a cell is the outputs of the two before it), a LayerNorm, then the head on the word starts
    (tagging) or on ``pool(h, tokens)``. input_ids, attention_mask, token_type_ids (B, L); word_starts,
    word_mask (B, W) for tagging."""
    mask = attention_mask.bool()
    tok = Tokens(mask)                   # what the ops derive from the mask, built once for all of them
    emb = zero_padding(net.embeddings(input_ids, token_type_ids), tok)
    states = [emb]
    s0 = s1 = emb
    for c, cell in enumerate(net.cells):
        s0, s1 = s1, run_cell(c, cell, s0, s1, tok)
        states.append(s1)
    s1 = zero_padding(net.final_norm(s1), tok)
    if net.kind == TAGGING:
        logits = net.head(states=s1, word_starts=word_starts)
        words = word_mask if word_mask is not None else word_starts.new_ones(word_starts.shape).bool()
        return ModelOutput(logits=logits, states=states, mask=mask, word_mask=words, crf=net.crf)
    return ModelOutput(logits=net.head(pooled=pool(s1, tok)), states=states, mask=mask)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all parameters, those in embedding tables): the second is what "without embeddings" leaves out."""
    total = sum(p.numel() for p in model.parameters())
    emb = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return total, emb
