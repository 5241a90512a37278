"""Self-distilled teachers: `naskd teacher --distill-from RUN --augmented AUG_RUN [--kd soft_ce=1]`.

Born-again networks (Furlanello et al. 2018): the same base encoder, fine-tuned again from its pretrained
weights, learns from a fine-tuned teacher's outputs instead of the gold labels; here on the teacher's cached
outputs for the training split and, with ``--augmented``, for the synthetic sentences of a `naskd augment`
run that teacher labelled (Tang et al. 2019's transfer set), under the same distillation criteria as a
student (``--kd``; the default ``soft_ce=1`` is the born-again loss, cross-entropy to the teacher's softmax).
The result is one more teacher run, which every command that takes ``--teacher`` takes.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


DATA_SEED = 0    # the subsample of --max-train-examples, drawn as `naskd augment` and retrain draw theirs


class SelfDistillation:
    """The training rows and targets of a self-distilled teacher (``finetune_teacher(cfg, source=...)``)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.teacher_dir = Path(cfg.distill_from)

    def check(self, spec) -> dict:
        """The --distill-from teacher's record; one clear line (ConfigError, NaskdError) for a run of another
        task or an --augmented run that teacher did not label."""
        from ..augment.data import check_labelled_by
        from .model import read_teacher_info

        info = read_teacher_info(self.teacher_dir)
        if info.get("task") != spec.name:
            raise ConfigError(f"--distill-from {self.teacher_dir} is a teacher of {info.get('task')}, not {spec.name}")
        if self.cfg.augmented:
            check_labelled_by(self.cfg.augmented, self.teacher_dir)
        return info

    def setup(self, spec, tokenizer, model, device):
        """(train, dev, make_batch(rows) -> batch with the teacher's outputs, the criteria)."""
        from ..distill import DistillationLoss
        from ..distill.context import kd_context
        from ..pipeline import batch_to, prepare

        cfg = self.cfg
        info = self.check(spec)
        if _vocab(self.teacher_dir) != tokenizer.get_vocab():
            raise ConfigError(f"--distill-from {self.teacher_dir} tokenises differently from the base encoder "
                              f"{cfg.teacher}: its cached outputs are per token; distil into the encoder it was "
                              "fine-tuned from (--teacher)")
        kd = DistillationLoss(cfg.kd, kd_context(spec, info, model.num_layers, model.hidden_size, self.teacher_dir,
                                                 seed=cfg.seed))
        data = prepare(spec.name, self.teacher_dir, data_dir=cfg.data_dir, max_train_examples=cfg.max_train_examples,
                       max_eval_examples=cfg.max_eval_examples, seed=DATA_SEED, requests=kd.teacher_requests(),
                       device=device, need_teacher=True, max_length=cfg.max_length, augmented=cfg.augmented)
        kd.setup(data.train_outputs, data.train)
        kd.to(device)
        return data.train, data.dev, lambda rows: batch_to(data.make_batch(rows), device), kd


def _vocab(run_dir: Path) -> dict:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(run_dir)).get_vocab()
