"""Baseline students, trained and measured through the same pipeline as searched ones.

- :class:`BiLSTMStudent`: Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple
  Neural Networks": a BiLSTM over word embeddings, the final forward and backward states concatenated,
  one ReLU layer, a classifier; for sentence pairs a siamese encoder whose features are
  [h1, h2, h1*h2, |h1-h2|]. Here on the teacher's WordPiece vocabulary, embeddings initialised from the
  teacher's table (projected by PCA to ``embed``).
- :class:`TruncatedTeacher`: the teacher's first k layers with its head (BERT_k in Sun et al. 2019 and
  the NAS-KD table), distilled with PKD.
- random genotypes: :func:`naskd.genotype.sample_genotype`, built as a :class:`FixedStudent`.

Every student's forward returns ``{"logits", "states", "mask"}`` like the supernet.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data.tasks import REGRESSION, TAGGING
from ..errors import NaskdError
from ..network import init_word_table
from ..records import ModelOutput
from ..space.ops import BiLSTM, zero_padding
from ..teachers.model import TeacherModel


class BiLSTMStudent(nn.Module):
    def __init__(self, *, vocab_size: int, kind: str, num_labels: int, pair: bool, embed: int = 300,
                 hidden: int = 150, relu: int = 200, dropout: float = 0.1):
        super().__init__()
        if kind == TAGGING:
            raise NaskdError("bilstm_soft is a sentence classifier (Tang et al. 2019); tagging tasks use "
                             "genotype, random or truncated_teacher students")
        self.kind, self.pair, self.num_labels = kind, pair, num_labels
        self.sizes = {"embed": embed, "hidden": hidden, "relu": relu}
        self.word = nn.Embedding(vocab_size, embed, padding_idx=0)
        self.lstm = BiLSTM(embed, hidden)
        self.dropout = nn.Dropout(dropout)
        feat = 2 * hidden * (4 if pair else 1)
        self.relu = nn.Sequential(nn.Linear(feat, relu), nn.ReLU())
        self.out = nn.Linear(relu, num_labels)

    @torch.no_grad()
    def init_from_teacher(self, tables: dict[str, torch.Tensor]) -> str:
        """Word embeddings from the teacher's table ``tables["word"]`` (V, D_t), PCA-projected to E."""
        return init_word_table(self.word, tables)

    def encode(self, x, mask):
        """x (B, L, E), mask (B, L) -> (B, 2H): final forward state and final backward state."""
        h = self.lstm(x, mask)                                               # (B, L, 2H)
        H = h.size(-1) // 2
        last = (mask.sum(1) - 1).clamp_min(0)                                # (B,)
        fwd = h[..., :H].gather(1, last[:, None, None].expand(-1, 1, H)).squeeze(1)
        return torch.cat([fwd, h[:, 0, H:]], -1)

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
        mask = attention_mask.bool()
        e = zero_padding(self.dropout(self.word(input_ids)), mask)     # (B, L, E)
        if self.pair:
            from .macro import split_pair

            mask_a, e_b, m_b, _ = split_pair(e, mask, token_type_ids)     # b's embeddings moved to the front
            h1, h2 = self.encode(e, mask_a), self.encode(e_b, m_b)
            feat = torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], -1)
        else:
            feat = self.encode(e, mask)
        logits = self.out(self.dropout(self.relu(self.dropout(feat))))
        if self.kind == REGRESSION:
            logits = logits.squeeze(-1)
        return ModelOutput(logits=logits, states=[e], mask=mask)


class TruncatedTeacher(TeacherModel):
    """A teacher cut to its first k layers; ``states`` are its hidden states (0 = embeddings)."""

    def forward(self, input_ids, attention_mask, token_type_ids=None, word_starts=None, word_mask=None, **_):
        out = super().forward(input_ids, attention_mask, token_type_ids, output_hidden_states=True,
                              word_starts=word_starts, word_mask=word_mask)
        out.states, out.hidden_states = list(out.hidden_states), None
        out.mask = attention_mask.bool()
        return out


def truncated_teacher(teacher_dir: str | Path, k: int, *, dropout: float = 0.1) -> TruncatedTeacher:
    """The first ``k`` layers (and the embeddings and head) of a fine-tuned teacher run of M_t layers,
    1 <= k <= M_t (k = M_t: the whole teacher, as the teacher search space's deepest member);
    :class:`NaskdError` naming the range otherwise."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    from ..teachers.model import _drop_pooler, read_teacher_info

    info = read_teacher_info(teacher_dir)
    if info.get("ensemble") is not None:
        raise NaskdError(f"teacher {teacher_dir} is an ensemble: it has no layers of its own to truncate; pass one "
                         f"of its members ({', '.join(info['ensemble'])})")
    m_t = int(info["num_layers"])
    if not 1 <= k <= m_t:
        raise NaskdError(f"--truncate-k must be in 1..{m_t} for a {m_t}-layer teacher, got {k}")
    config = AutoConfig.from_pretrained(str(teacher_dir))
    config.num_hidden_layers = k
    model = TruncatedTeacher(_drop_pooler(AutoModel.from_config(config)), info["kind"], info["num_labels"],
                             info.get("pooling", "mean"), dropout)
    state = load_file(str(Path(teacher_dir) / "model.safetensors"))
    own = model.state_dict()
    kept = {n: t for n, t in state.items() if n in own}
    missing = sorted(set(own) - set(kept))
    if missing:
        raise NaskdError(f"teacher {teacher_dir} cannot be truncated: its weights lack {missing[:3]}")
    model.load_state_dict(kept, strict=True)
    return model

