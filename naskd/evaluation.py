"""`naskd evaluate`: a student or teacher scored on a split or a file (predictions and metrics written)."""
from __future__ import annotations

import numpy as np

from .data.metrics import predictions_from_logits, score
from .data.tasks import REGRESSION, TAGGING


def run_evaluate(model_path, *, task: str | None = None, split: str = "dev", file: str | None = None,
                 fmt: str = "auto", data_dir=None, out=None, overwrite: bool = False, batch_size: int = 128,
                 device: str = "auto", max_length: int | None = None) -> dict:
    """`naskd evaluate`: score a student or teacher on a split or a file; write predictions and metrics."""
    import json
    from pathlib import Path

    from .data.encode import encode
    from .data.readers import read_any_file, read_columns
    from .data.tasks import get_task
    from .errors import NaskdError
    from .modeldir import load_model
    from .predict import evaluate_model
    from .utils.io import write_json, write_text
    from .utils.rundir import data_root_or_none, prepare_run_dir
    from .utils.runtime import pick_device

    loaded = load_model(model_path)
    spec = get_task(task or loaded.task)
    if spec.name != loaded.task:
        raise NaskdError(f"{model_path} was trained for {loaded.task}, not {spec.name}")
    if file:
        cols, used = read_any_file(file, spec, fmt)
        source = f"{file} ({used})"
    else:
        cols, source = read_columns(spec, data_dir, split), f"{spec.name} {split} split"
    run_dir = prepare_run_dir(Path(out or f"runs/{spec.name}-evaluate"), command="evaluate", overwrite=overwrite,
                              resume=False, reads=[model_path, file, None if file else data_root_or_none(data_dir)])
    dev = encode(spec, cols, loaded.tokenizer, loaded.max_length if max_length is None else max_length)
    dev_device = pick_device(device)
    model = loaded.model.to(dev_device).eval()
    metrics, outputs = evaluate_model(model, spec, dev, batch_size=batch_size, device=dev_device,
                                      pad_id=loaded.pad_id)
    pred = predictions_from_logits(spec, outputs)
    if spec.kind == TAGGING:
        # words cut off by max_length have no prediction: score them as "O" against the full gold sequence,
        # so truncation costs recall instead of silently leaving words out
        o = spec.labels.index("O")
        full = [np.asarray(t) for t in cols["tags"]]
        pred = [np.concatenate([p, np.full(len(g) - len(p), o, dtype=np.int64)]) for p, g in zip(pred, full)]
        metrics = score(spec, full, pred)
        metrics["truncated_sentences"] = int(dev.meta.get("truncated", 0))
    rows = []
    for i in range(len(dev)):
        r = {"line": int(cols["line"][i])}
        if spec.kind == TAGGING:
            r.update(tokens=cols["tokens"][i], gold=[spec.labels[t] for t in full[i]],
                     pred=[spec.labels[t] for t in pred[i]])
        else:
            r["text"] = cols["text"][i]
            if spec.is_pair:
                r["text_pair"] = cols["text_pair"][i]
            if spec.kind == REGRESSION:
                r.update(gold=float(dev.labels[i]), pred=float(pred[i]))
            else:
                r.update(gold=spec.labels[int(dev.labels[i])], pred=spec.labels[int(pred[i])])
        rows.append(json.dumps(r, ensure_ascii=False))
    write_text(run_dir / "predictions.jsonl", "\n".join(rows) + "\n")
    result = {"command": "evaluate", "model": str(loaded.path), "role": loaded.role, "task": spec.name,
              "source": source, "examples": len(dev), "metrics": metrics}
    write_json(run_dir / "metrics.json", result)
    result["_out"] = str(run_dir)
    return result
