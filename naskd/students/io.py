"""Student directories: safetensors weights, ``student.json`` (architecture, kind, sizes, genotype), the
tokenizer, and for a truncated teacher its Hugging Face ``config.json``. Nothing is unpickled."""
from __future__ import annotations

import os
from pathlib import Path


from ..data.tasks import get_task
from ..errors import NaskdError
from ..genotype import Genotype
from ..utils.io import read_json, save_safetensors, write_json
from .fixed import FixedStudent

STUDENT_FORMAT = 1


def architecture_of(model) -> tuple[str, dict]:
    from .baselines import BiLSTMStudent, TruncatedTeacher

    if isinstance(model, FixedStudent):
        return "genotype", {"width": model.width, "vocab_size": model.embeddings.word.num_embeddings,
                            "max_positions": model.embeddings.position.num_embeddings,
                            "embed_width": model.embeddings.embed_width, "genotype": model.genotype.to_dict()}
    if isinstance(model, BiLSTMStudent):
        return "bilstm", {"pair": model.pair, "vocab_size": model.word.num_embeddings, **model.sizes}
    if isinstance(model, TruncatedTeacher):
        return "truncated_teacher", {"pooling": model.pooling, "layers": model.num_layers,
                                     "width": model.hidden_size}
    raise TypeError(f"cannot save a {type(model).__name__} as a student")


def save_student(path: str | os.PathLike, model, tokenizer, *, task: str, extra: dict | None = None):
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arch, fields = architecture_of(model)
    save_safetensors(path / "model.safetensors", model.state_dict(), metadata={"format": "naskd-student"})
    tokenizer.save_pretrained(str(path))
    if arch == "truncated_teacher":
        model.encoder.config.to_json_file(str(path / "config.json"))
    info = {"naskd": "student", "format": STUDENT_FORMAT, "architecture": arch, "task": task,
            "kind": model.kind, "num_labels": model.num_labels, **fields}
    info.update(extra or {})
    write_json(path / "student.json", info)


def build_student(info: dict, path: Path, source: str = "student.json"):
    """An untrained module of the architecture ``info`` describes (weights are loaded by the caller)."""
    arch = info.get("architecture", "genotype")
    if arch == "genotype":
        genotype = Genotype.from_dict(info["genotype"], source)
        return FixedStudent(genotype, kind=info["kind"], num_labels=info["num_labels"],
                            vocab_size=info["vocab_size"], max_positions=info["max_positions"], width=info["width"],
                            embed_width=info.get("embed_width"))
    if arch == "bilstm":
        from .baselines import BiLSTMStudent

        return BiLSTMStudent(vocab_size=info["vocab_size"], kind=info["kind"], num_labels=info["num_labels"],
                             pair=info["pair"], embed=info["embed"], hidden=info["hidden"], relu=info["relu"])
    if arch == "truncated_teacher":
        from transformers import AutoConfig, AutoModel

        from ..teachers.model import _drop_pooler
        from .baselines import TruncatedTeacher

        if not (path / "config.json").is_file():
            raise NaskdError(f"student directory {path} is incomplete: missing config.json")
        encoder = _drop_pooler(AutoModel.from_config(AutoConfig.from_pretrained(str(path))))
        return TruncatedTeacher(encoder, info["kind"], info["num_labels"], info.get("pooling", "mean"))
    raise NaskdError(f"{source}: unknown student architecture '{arch}' (known: genotype, bilstm, "
                     "truncated_teacher)")


def read_student_info(path: str | os.PathLike) -> dict:
    path = Path(path)
    if (path / "student").is_dir() and not (path / "student.json").is_file():
        path = path / "student"
    info_path = path / "student.json"
    info = read_json(info_path, missing=f"{path} is not a naskd student directory (no student.json)")
    missing = [f for f in ("model.safetensors", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        raise NaskdError(f"student directory {path} is incomplete: missing {', '.join(missing)}")
    info["_path"] = str(path)
    return info


def load_student(path: str | os.PathLike):
    """Load a retrained student in one call: returns (model in eval mode, tokenizer, info)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    info = read_student_info(path)
    path = Path(info["_path"])
    get_task(info["task"])
    model = build_student(info, path, str(path / "student.json"))
    state = load_file(str(path / "model.safetensors"))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise NaskdError(f"weights in {path / 'model.safetensors'} do not match student.json: {e}") from None
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(path)), info
