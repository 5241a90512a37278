"""Seed ensembles as teachers: `naskd teacher --ensemble RUN_A,RUN_B,...` (the module that averages the
members is :class:`naskd.teachers.model.TeacherEnsemble`).

An ensemble is a teacher run directory without weights of its own: ``teacher.json`` lists its member teacher
runs (``"ensemble"``), the tokenizer is the members' (they must share it), and every command that takes
``--teacher`` takes it. Its outputs are the members' means: the logits (so soft targets are the mean of the
members' logits, the ensemble teacher of Hinton et al. 2015 in logit space) and, where a criterion asks for
hidden states, each layer's mean over the members (all members have the same depth and width). Its dev
score is the ensemble's, measured when it is made. Sentence tasks only (a tagger's CRF transitions are not
averaged). The student's embedding tables are initialised from the first member's.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.tasks import TAGGING, get_task
from ..errors import ConfigError
from ..utils.io import file_sha256, save_npy, save_pretrained_atomic, write_json


def make_ensemble(members: list[str], out: str | Path, *, task: str | None = None, data_dir=None,
                  max_eval_examples: int | None = None, seed: int = 42, overwrite: bool = False) -> dict:
    """Write the ensemble teacher run ``out`` of the teacher runs ``members`` and score it on dev; return its
    metrics. ConfigError (one line, before any work) for fewer than two members, a member that is not a
    teacher run, members of another task than ``task``, members of different tasks, label sets, depths,
    widths or tokenizers, an ensemble member, or a tagging task."""
    from ..data.encode import encode
    from ..data.readers import load_split, subsample
    from ..predict import evaluate_model
    from ..utils.rundir import check_run_dir, prepare_run_dir
    from .model import TeacherEnsemble, load_teacher, read_teacher_info

    t0 = time.time()
    if len(members) < 2:
        raise ConfigError("--ensemble needs at least two teacher runs, separated by commas")
    paths = [Path(m).expanduser().resolve() for m in members]
    if len(set(paths)) < len(paths):
        raise ConfigError("--ensemble lists a teacher run twice")
    infos = [read_teacher_info(p) for p in paths]
    first = infos[0]
    for p, info in zip(paths, infos):
        if info.get("ensemble") is not None:
            raise ConfigError(f"--ensemble member {p} is an ensemble itself; list its members instead")
        for key in ("task", "kind", "num_labels", "labels", "num_layers", "hidden_size"):
            if info.get(key) != first.get(key):
                raise ConfigError(f"--ensemble members differ in {key}: {paths[0]} has {first.get(key)!r}, {p} "
                                  f"has {info.get(key)!r}")
        if file_sha256(p / "tokenizer.json") != file_sha256(paths[0] / "tokenizer.json"):
            raise ConfigError(f"--ensemble members use different tokenizers ({paths[0]} and {p}); an ensemble "
                              "averages outputs over the same tokens")
    spec = get_task(first["task"])
    if task is not None and get_task(task).name != spec.name:
        raise ConfigError(f"--ensemble members are {spec.name} teachers, not {get_task(task).name} (pass --task "
                          f"{spec.name})")
    if spec.kind == TAGGING:
        raise ConfigError(f"--ensemble is for sentence tasks; {spec.name} is a tagging task (the members' CRF "
                          "transitions are not averaged)")
    dev_cols = load_split(spec, data_dir, "dev")            # readable before the run directory is made
    guard = dict(command="teacher", overwrite=overwrite, resume=False, reads=[str(p) for p in paths],
                 settings={"ensemble": [str(p) for p in paths], "task": spec.name})
    check_run_dir(Path(out), **guard)
    loaded = [load_teacher(p) for p in paths]
    tokenizer = loaded[0][1]                                  # the members' shared tokenizer
    model = TeacherEnsemble([m for m, _, _ in loaded]).eval()
    run_dir = prepare_run_dir(Path(out), **guard)
    save_pretrained_atomic(tokenizer, run_dir)
    dev_cols = dev_cols.select(subsample(len(dev_cols), max_eval_examples, seed))
    recipe = first.get("recipe", {})
    dev = encode(spec, dev_cols, tokenizer, int(recipe.get("max_length", 128)) if isinstance(recipe, dict) else 128)
    metrics, logits = evaluate_model(model, spec, dev, batch_size=128, device=torch.device("cpu"),
                                     pad_id=tokenizer.pad_token_id or 0)
    info = {"naskd": "teacher", "format": first.get("format", 1), "task": spec.name, "kind": first["kind"],
            "num_labels": first["num_labels"], "labels": first.get("labels"), "pooling": first.get("pooling", "mean"),
            "base": f"ensemble of {len(paths)}: " + ", ".join(str(info.get("base")) for info in infos),
            "num_layers": first["num_layers"], "hidden_size": first["hidden_size"],
            "ensemble": [str(p) for p in paths], "recipe": recipe, "dev": metrics,
            "member_dev": [info.get("dev") for info in infos]}
    write_json(run_dir / "teacher.json", info)
    save_npy(run_dir / "dev_logits.npy", np.asarray(logits, dtype=np.float32))
    out_metrics = {"command": "teacher", "task": spec.name, "status": "finished", "ensemble": info["ensemble"],
                   "dev": metrics, "member_dev": info["member_dev"], "dev_examples": len(dev),
                   "wall_seconds_this_process": round(time.time() - t0, 1)}
    write_json(run_dir / "metrics.json", out_metrics)
    return out_metrics
