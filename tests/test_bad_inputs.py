"""Issue 19's table: every command with the bad-input families (encoding, structure, range, paths).

Each case must end with exit status 2, one line on stderr, no traceback, and nothing changed on disk:
neither the inputs (teacher, student, search run, data, the user's folder) nor the working directory
(where default outputs under runs/ would appear)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from naskd.cli import main

from .conftest import DATA
from .search.test_search import SPACE_YAML
from .students.test_retrain import GENOTYPE


class World:
    """The inputs every case reads, made once: real runs of each kind and a zoo of bad files."""


@pytest.fixture(scope="module")
def world(tiny_teacher, tmp_path_factory):
    teacher, _ = tiny_teacher
    w = World()
    root = tmp_path_factory.mktemp("world")
    w.root, w.teacher = root, teacher
    w.genotype = root / "genotype.json"
    w.genotype.write_text(json.dumps(GENOTYPE))
    w.space = root / "tiny.yaml"
    w.space.write_text(SPACE_YAML)
    common = ["--task", "sst2", "--teacher", str(teacher), "--data-dir", str(DATA), "--max-train-examples", "32",
              "--max-eval-examples", "16", "--batch-size", "8", "--epochs", "1"]
    assert main(["retrain", *common, "--genotype", str(w.genotype), "--out", str(root / "run")]) == 0
    w.student = root / "run" / "student"
    assert main(["search", *common, "--space", str(w.space), "--layers", "2", "--out", str(root / "search")]) == 0
    w.search = root / "search"
    # bad files
    w.binary = root / "binary.bin"
    w.binary.write_bytes(b"\x00\x01\xff\xfe\x89PNG\r\n\x1a\n" * 20)
    w.latin1 = root / "latin1.tsv"
    w.latin1.write_bytes("sentence\tlabel\ncaf\xe9 cr\xe8me\t1\n".encode("latin-1"))
    w.bad_data = root / "bad-data"                        # a task folder whose train split is not UTF-8
    w.bad_data.mkdir()
    shutil.copy(w.binary, w.bad_data / "train.tsv")
    shutil.copy(DATA / "glue" / "SST-2" / "dev.tsv", w.bad_data / "dev.tsv")
    w.list_json = root / "list.json"
    w.list_json.write_text("[1, 2, 3]")
    w.list_yaml = root / "list.yaml"
    w.list_yaml.write_text("- a\n- b\n")
    w.no_edges = root / "no-edges.json"
    w.no_edges.write_text(json.dumps({**GENOTYPE, "cells": [[[], [["attn4", 1], ["identity", 2]]]]}))
    w.zero_layers = root / "zero-layers.json"
    w.zero_layers.write_text(json.dumps({**GENOTYPE, "layers": 0}))
    w.fractional = root / "fractional.json"
    w.fractional.write_text(json.dumps({**GENOTYPE, "cells": [[[["conv3", 0.5], ["lstm", 1]],
                                                                  [["attn4", 1], ["identity", 2]]]]}))
    w.wrong_columns = root / "wrong-columns.tsv"
    w.wrong_columns.write_text("a\tb\tc\td\n1\t2\t3\t4\n")
    w.user_dir = root / "my-folder"                       # a folder naskd did not make
    w.user_dir.mkdir()
    (w.user_dir / "thesis.tex").write_text("years of work")
    w.file = root / "a-file.txt"
    w.file.write_text("not a directory")
    w.existing_png = root / "existing.png"
    w.existing_png.write_bytes(b"\x89PNG keep")
    w.corrupt_student = root / "corrupt-student"
    shutil.copytree(w.student, w.corrupt_student)
    data = (w.corrupt_student / "model.safetensors").read_bytes()
    (w.corrupt_student / "model.safetensors").write_bytes(data[: len(data) // 3])
    w.missing = root / "does-not-exist"
    return w


T, S, R, A = "teacher", "search", "retrain", "augment"


def base(cmd: str, w: World) -> list[str]:
    """A command line that would run (into a fresh --out) but for the one bad input each case adds."""
    out = ["--out", str(w.root / "new-out")]
    if cmd == T:
        return [T, "--task", "sst2", "--teacher", str(w.teacher), "--data-dir", str(DATA), *out]
    if cmd == S:
        return [S, "--task", "sst2", "--teacher", str(w.teacher), "--data-dir", str(DATA), "--space", str(w.space),
                "--layers", "2", *out]
    if cmd == R:
        return [R, "--task", "sst2", "--teacher", str(w.teacher), "--data-dir", str(DATA), "--genotype",
                str(w.genotype), *out]
    if cmd == A:
        return [A, "--task", "sst2", "--teacher", str(w.teacher), "--data-dir", str(DATA), *out]
    raise KeyError(cmd)


def replace(argv: list[str], flag: str, value) -> list[str]:
    argv = list(argv)
    i = argv.index(flag)
    argv[i + 1] = str(value)
    return argv


# (family, id, argv builder)
CASES = [
    # ---- encoding
    ("encoding", "teacher non-UTF-8 train split", lambda w: replace(base(T, w), "--data-dir", w.bad_data)),
    ("encoding", "teacher binary --config", lambda w: base(T, w) + ["--config", str(w.binary)]),
    ("encoding", "search non-UTF-8 train split", lambda w: replace(base(S, w), "--data-dir", w.bad_data)),
    ("encoding", "search binary --space", lambda w: replace(base(S, w), "--space", w.binary)),
    ("encoding", "retrain non-UTF-8 train split", lambda w: replace(base(R, w), "--data-dir", w.bad_data)),
    ("encoding", "retrain binary --genotype", lambda w: replace(base(R, w), "--genotype", w.binary)),
    ("encoding", "evaluate binary --file", lambda w: ["evaluate", "--model", str(w.student), "--file",
                                                      str(w.binary), "--out", str(w.root / "new-out")]),
    ("encoding", "evaluate latin-1 --file", lambda w: ["evaluate", "--model", str(w.student), "--file",
                                                       str(w.latin1), "--out", str(w.root / "new-out")]),
    ("encoding", "evaluate non-UTF-8 dev split", lambda w: ["evaluate", "--model", str(w.student), "--data-dir",
                                                            str(w.bad_data), "--split", "train", "--out",
                                                            str(w.root / "new-out")]),
    ("encoding", "augment binary --pos-corpus", lambda w: base(A, w) + ["--pos-corpus", str(w.binary)]),
    ("encoding", "plot binary genotype", lambda w: ["plot", str(w.binary), "-o", str(w.root / "new.png")]),
    ("encoding", "tune binary --genotype", lambda w: ["tune", "--genotype", str(w.binary), "--teacher",
                                                      str(w.teacher), "--data-dir", str(DATA), "--out",
                                                      str(w.root / "new-out")]),
    # ---- structure
    ("structure", "teacher --config holding a list", lambda w: base(T, w) + ["--config", str(w.list_yaml)]),
    ("structure", "search --space holding a list", lambda w: replace(base(S, w), "--space", w.list_yaml)),
    ("structure", "retrain genotype JSON list", lambda w: replace(base(R, w), "--genotype", w.list_json)),
    ("structure", "retrain genotype node without edges", lambda w: replace(base(R, w), "--genotype", w.no_edges)),
    ("structure", "retrain genotype layers 0", lambda w: replace(base(R, w), "--genotype", w.zero_layers)),
    ("structure", "retrain genotype fractional input", lambda w: replace(base(R, w), "--genotype", w.fractional)),
    ("structure", "evaluate --model not a model", lambda w: ["evaluate", "--model", str(w.user_dir), "--out",
                                                             str(w.root / "new-out")]),
    ("structure", "evaluate --file wrong columns", lambda w: ["evaluate", "--model", str(w.student), "--file",
                                                              str(w.wrong_columns), "--format", "glue", "--out",
                                                              str(w.root / "new-out")]),
    ("structure", "export corrupt safetensors", lambda w: ["export", "--model", str(w.corrupt_student), "--format",
                                                           "onnx", "-o", str(w.root / "new.onnx")]),
    ("structure", "export --model not a model", lambda w: ["export", "--model", str(w.user_dir), "--format",
                                                           "onnx", "-o", str(w.root / "new.onnx")]),
    ("structure", "bench corrupt safetensors", lambda w: ["bench", "--model", str(w.corrupt_student), "--data-dir",
                                                          str(DATA), "--out", str(w.root / "new-out")]),
    ("structure", "analyze --model not a model", lambda w: ["analyze", "cka", "--model", str(w.user_dir),
                                                            "--teacher", str(w.teacher), "--out",
                                                            str(w.root / "new-out")]),
    ("structure", "derive from a folder that is no search run", lambda w: ["derive", str(w.user_dir), "-o",
                                                                          str(w.root / "g.json")]),
    ("structure", "plot genotype JSON list", lambda w: ["plot", str(w.list_json), "-o", str(w.root / "new.png")]),
    ("structure", "plot unknown format", lambda w: ["plot", str(w.genotype), "-o", str(w.root / "new.foo")]),
    ("structure", "tune storage URL that does not parse", lambda w: ["tune", "--genotype", str(w.genotype),
                                                                     "--teacher", str(w.teacher), "--data-dir",
                                                                     str(DATA), "--storage", "nonsense", "--out",
                                                                     str(w.root / "new-out")]),
    ("structure", "search --storage with a strategy that shares no candidates",
     lambda w: ["search", "--task", "sst2", "--teacher", str(w.teacher), "--data-dir", str(DATA), "--strategy",
                "darts", "--storage", f"sqlite:///{w.root}/s.db", "--out", str(w.root / "new-out")]),
    ("structure", "search storage URL that does not parse",
     lambda w: ["search", "--task", "sst2", "--teacher", str(w.teacher), "--data-dir", str(DATA), "--strategy",
                "spos", "--space", "macro", "--storage", "nonsense", "--out", str(w.root / "new-out")]),
    ("structure", "search storage URL with a port that is not a number",
     lambda w: ["search", "--task", "sst2", "--teacher", str(w.teacher), "--data-dir", str(DATA), "--strategy",
                "random", "--space", "macro", "--storage", "postgresql://u:secret@localhost:port/db", "--out",
                str(w.root / "new-out")]),
    ("structure", "worker on a folder that is no search run", lambda w: ["worker", str(w.user_dir)]),
    ("structure", "worker on a search started without --storage", lambda w: ["worker", str(w.search)]),
    ("structure", "tune genotype JSON list", lambda w: ["tune", "--genotype", str(w.list_json), "--teacher",
                                                        str(w.teacher), "--data-dir", str(DATA), "--out",
                                                        str(w.root / "new-out")]),
    # ---- range
    ("range", "teacher --lr nan", lambda w: base(T, w) + ["--lr", "nan"]),
    ("range", "teacher --lr negative", lambda w: base(T, w) + ["--lr=-1e-3"]),
    ("range", "teacher --dropout 1.5", lambda w: base(T, w) + ["--dropout", "1.5"]),
    ("range", "teacher --max-length 0", lambda w: base(T, w) + ["--max-length", "0"]),
    ("range", "teacher --epochs 0", lambda w: base(T, w) + ["--epochs", "0"]),
    ("range", "search --temperature 0", lambda w: base(S, w) + ["--temperature", "0"]),
    ("range", "search --temperature negative", lambda w: base(S, w) + ["--temperature", "-2"]),
    ("range", "search --log-every 0", lambda w: base(S, w) + ["--log-every", "0"]),
    ("range", "search --checkpoint-every 0", lambda w: base(S, w) + ["--checkpoint-every", "0"]),
    ("range", "search --layers 0", lambda w: base(S, w) + ["--layers", "0"]),
    ("range", "retrain --lr nan", lambda w: base(R, w) + ["--lr", "nan"]),
    ("range", "retrain --dropout 1.5", lambda w: base(R, w) + ["--dropout", "1.5"]),
    ("range", "retrain --temperature 0", lambda w: base(R, w) + ["--temperature", "0"]),
    ("range", "retrain --max-length 0", lambda w: base(R, w) + ["--max-length", "0"]),
    ("range", "retrain --batch-size 0", lambda w: base(R, w) + ["--batch-size", "0"]),
    ("range", "augment --p-mask 1.5", lambda w: base(A, w) + ["--p-mask", "1.5"]),
    ("range", "evaluate --batch-size 0", lambda w: ["evaluate", "--model", str(w.student), "--data-dir", str(DATA),
                                                    "--batch-size", "0", "--out", str(w.root / "new-out")]),
    ("range", "evaluate --max-length 0", lambda w: ["evaluate", "--model", str(w.student), "--data-dir", str(DATA),
                                                    "--max-length", "0", "--out", str(w.root / "new-out")]),
    ("range", "bench --repeat 0", lambda w: ["bench", "--model", str(w.student), "--data-dir", str(DATA),
                                             "--repeat", "0", "--out", str(w.root / "new-out")]),
    ("range", "bench --threads 0", lambda w: ["bench", "--model", str(w.student), "--data-dir", str(DATA),
                                              "--threads", "0", "--out", str(w.root / "new-out")]),
    ("range", "derive --epoch 0", lambda w: ["derive", str(w.search), "--epoch", "0", "-o", str(w.root / "g.json")]),
    ("range", "derive --top-k 0", lambda w: ["derive", str(w.search), "--top-k", "0", "-o", str(w.root / "g.json")]),
    ("range", "tune --trials 0", lambda w: ["tune", "--genotype", str(w.genotype), "--teacher", str(w.teacher),
                                            "--data-dir", str(DATA), "--trials", "0", "--out",
                                            str(w.root / "new-out")]),
    ("range", "analyze --batch-size 0", lambda w: ["analyze", "cka", "--model", str(w.student), "--teacher",
                                                   str(w.teacher), "--data-dir", str(DATA), "--batch-size", "0",
                                                   "--out", str(w.root / "new-out")]),
    # ---- paths
    ("paths", "teacher --data-dir missing", lambda w: replace(base(T, w), "--data-dir", w.missing)),
    ("paths", "teacher --out is a file", lambda w: replace(base(T, w), "--out", w.file)),
    ("paths", "search --teacher missing", lambda w: replace(base(S, w), "--teacher", w.missing)),
    ("paths", "search --resume into a user's folder", lambda w: replace(base(S, w), "--out", w.user_dir)
     + ["--resume"]),
    ("paths", "retrain --genotype missing", lambda w: replace(base(R, w), "--genotype", w.missing)),
    ("paths", "retrain --overwrite a user's folder", lambda w: replace(base(R, w), "--out", w.user_dir)
     + ["--overwrite"]),
    ("paths", "retrain --overwrite its teacher", lambda w: replace(base(R, w), "--out", w.teacher)
     + ["--overwrite"]),
    ("paths", "retrain --out below a file", lambda w: replace(base(R, w), "--out", w.file / "run")),
    ("paths", "retrain --init missing", lambda w: base(R, w) + ["--init", str(w.missing)]),
    ("paths", "augment --teacher missing", lambda w: replace(base(A, w), "--teacher", w.missing)),
    ("paths", "evaluate --out its own student", lambda w: ["evaluate", "--model", str(w.student), "--data-dir",
                                                           str(DATA), "--out", str(w.student), "--overwrite"]),
    ("paths", "evaluate --model missing", lambda w: ["evaluate", "--model", str(w.missing), "--out",
                                                     str(w.root / "new-out")]),
    ("paths", "export -o a directory", lambda w: ["export", "--model", str(w.student), "--format", "onnx", "-o",
                                                  str(w.user_dir)]),
    ("paths", "export -o below a file", lambda w: ["export", "--model", str(w.student), "--format", "torchscript",
                                                   "-o", str(w.file / "m.pt")]),
    ("paths", "bench --out is a file", lambda w: ["bench", "--model", str(w.student), "--data-dir", str(DATA),
                                                  "--out", str(w.file)]),
    ("paths", "analyze --teacher missing", lambda w: ["analyze", "cka", "--model", str(w.student), "--teacher",
                                                      str(w.missing), "--data-dir", str(DATA), "--out",
                                                      str(w.root / "new-out")]),
    ("device", "analyze --device cuda without a GPU", lambda w: ["analyze", "cka", "--model", str(w.student),
                                                                "--teacher", str(w.teacher), "--data-dir", str(DATA),
                                                                "--device", "cuda", "--out", str(w.root / "new-out")]),
    ("paths", "plot -o an existing file", lambda w: ["plot", str(w.genotype), "-o", str(w.existing_png)]),
    ("paths", "plot missing target", lambda w: ["plot", str(w.missing), "-o", str(w.root / "new.png")]),
    ("paths", "derive -o its own run's file", lambda w: ["derive", str(w.search), "-o", str(w.search / "genotype.json"),
                                                         "--overwrite"]),
    ("paths", "worker on a run directory that never appears", lambda w: ["worker", str(w.missing), "--timeout",
                                                                          "1"]),
    ("range", "worker --timeout 0", lambda w: ["worker", str(w.search), "--timeout", "0"]),
    ("paths", "tune sqlite storage in a missing folder", lambda w: ["tune", "--genotype", str(w.genotype),
                                                                    "--teacher", str(w.teacher), "--data-dir",
                                                                    str(DATA), "--storage",
                                                                    f"sqlite:///{w.missing}/sub/x.db", "--out",
                                                                    str(w.root / "new-out")]),
]


def snapshot(*roots: Path) -> dict:
    files = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            files[str(p)] = p.read_bytes() if p.is_file() else None
    return files


@pytest.mark.parametrize("family,case,build", CASES, ids=[f"{f}: {c}" for f, c, _ in CASES])
def test_bad_input_is_one_line_exit_2_nothing_changed(world, family, case, build, tmp_path, monkeypatch, capsys):
    if family == "device" and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)                                # default outputs (runs/...) would land here
    argv = build(world)
    before = snapshot(world.root, world.teacher, cwd)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, (argv, rc, err)
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"naskd {argv[0]}: error: "), lines[0]
    assert snapshot(world.root, world.teacher, cwd) == before, "files changed on disk"


def test_the_table_covers_every_command_and_family():
    names = {"teacher", "search", "retrain", "evaluate", "export", "bench", "augment", "tune", "plot", "derive",
             "analyze", "worker"}
    seen = {c.split()[0] for _, c, _ in CASES}
    assert names <= seen, names - seen
    for family in ("encoding", "structure", "range", "paths"):
        assert sum(f == family for f, _, _ in CASES) >= 8, family
