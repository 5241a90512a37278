import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from naskd.cli import main
from naskd.data.encode import encode
from naskd.data.readers import read_columns
from naskd.data.tasks import get_task
from naskd.errors import NaskdError
from naskd.data.metrics import predictions_from_logits, score
from naskd.predict import predict_logits
from naskd.teachers import load_teacher
from naskd.teachers.model import read_teacher_info, resolve_base_model

from ..conftest import DATA, TINY_BERT

TINY = ["teacher", "--task", "sst2", "--teacher", str(TINY_BERT), "--data-dir", str(DATA), "--epochs", "1",
        "--max-train-examples", "160", "--max-eval-examples", "64", "--batch-size", "16"]


def test_tiny_finetune_writes_a_complete_run(tiny_teacher):
    out, metrics = tiny_teacher
    for f in ("model.safetensors", "config.json", "tokenizer.json", "teacher.json", "metrics.json",
              "config.yaml", "dev_logits.npy", "checkpoint.pt"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["status"] == "finished" and saved["train_examples"] == 256
    assert 0.0 <= saved["dev"]["accuracy"] <= 1.0
    info = read_teacher_info(out, "sst2")
    assert info["num_layers"] == 2 and info["hidden_size"] == 128


def test_reloaded_teacher_reproduces_dev_metrics(tiny_teacher):
    out, metrics = tiny_teacher
    model, tok, info = load_teacher(out, "sst2")
    spec = get_task("sst2")
    from naskd.data.readers import subsample

    dev = encode(spec, read_columns(spec, DATA, "dev"), tok, 128)
    dev = dev.select(subsample(len(dev), 128, 42))
    logits = predict_logits(lambda b: model(**b)["logits"], dev, batch_size=64, device="cpu")
    np.testing.assert_allclose(logits, np.load(out / "dev_logits.npy"), atol=1e-5)
    acc = score(spec, dev.labels, predictions_from_logits(spec, logits))["accuracy"]
    assert acc == pytest.approx(metrics["dev"]["accuracy"])


def test_existing_run_dir_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out), "--stop-after-steps", "1"]) == 0
    before = (out / "checkpoint.pt").stat().st_mtime_ns
    assert main(TINY + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and "Traceback" not in err
    assert (out / "checkpoint.pt").stat().st_mtime_ns == before
    assert main(TINY + ["--out", str(out), "--overwrite", "--stop-after-steps", "1"]) == 0


def test_resume_equals_uninterrupted(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    args = TINY + ["--checkpoint-every", "0"]
    assert main(args + ["--out", str(full)]) == 0
    assert main(args + ["--out", str(part), "--stop-after-steps", "4"]) == 0
    assert json.loads((part / "metrics.json").read_text())["status"] == "stopped"
    assert main(args + ["--out", str(part), "--resume"]) == 0
    a, b = load_file(str(full / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert json.loads((part / "metrics.json").read_text())["status"] == "finished"


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    cases = [
        (["teacher", "--task", "sst3"], "unknown task 'sst3'"),
        (TINY + ["--epochs", "0", "--out", str(tmp_path / "a")], "setting 'epochs' must be an integer >= 1, got 0"),
        (TINY + ["--lr", "fast"], "'lr' expects float"),
        (["teacher", "--task", "sst2", "--data-dir", str(tmp_path / "none")], "does not exist"),
        (TINY + ["--teacher", str(tmp_path / "missing"), "--out", str(tmp_path / "b")], "does not exist"),
        (TINY + ["--config", str(tmp_path / "no.yaml")], "config file"),
        (TINY + ["--out", str(tmp_path / "c"), "--resume"], "holds no run to resume"),
        (TINY + ["--out", str(tmp_path / "d"), "--selection-from", "sentences"], "give --selection-examples N"),
        (TINY + ["--out", str(tmp_path / "f"), "--selection-examples", "10000", "--selection-from", "sentences",
                 "--max-train-examples", "100"], "only 6885 training rows lie inside no other row"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_config_file_and_flags(tmp_path):
    from naskd.teachers.finetune import resolve_teacher_config

    f = tmp_path / "c.yaml"
    f.write_text("task: rte\nepochs: 2\nbatch_size: 8\n")
    cfg = resolve_teacher_config({"epochs": "4"}, str(f))
    assert (cfg.task, cfg.epochs, cfg.batch_size) == ("rte", 4, 8)
    assert cfg.lr == 5e-5  # from teachers/rte.yaml
    f.write_text("epocs: 2\n")
    with pytest.raises(NaskdError, match="unknown setting 'epocs'"):
        resolve_teacher_config({}, str(f))


def test_hub_name_offline_fails_clearly():
    from naskd.teachers.model import load_encoder_and_tokenizer

    with pytest.raises(NaskdError, match="Hugging Face Hub.*--local-dir DIR.*--teacher DIR"):
        load_encoder_and_tokenizer("some-org/some-model-that-is-not-here")


def test_folder_without_config(tmp_path):
    with pytest.raises(NaskdError, match="no config.json"):
        resolve_base_model(str(tmp_path))


def test_teacher_run_checks(tiny_teacher, tmp_path):
    out, _ = tiny_teacher
    with pytest.raises(NaskdError, match="fine-tuned for task sst2, not rte"):
        read_teacher_info(out, "rte")
    with pytest.raises(NaskdError, match="not a teacher run"):
        read_teacher_info(tmp_path, "sst2")


@pytest.mark.parametrize("task,metric", [("stsb", "pearson"), ("mrpc", "f1"), ("cola", "mcc")])
def test_other_glue_tasks_train_end_to_end(tmp_path, task, metric):
    out = tmp_path / task
    argv = ["teacher", "--task", task, "--teacher", str(TINY_BERT), "--data-dir", str(DATA),
            "--epochs", "1", "--max-train-examples", "96", "--max-eval-examples", "64", "--out", str(out)]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert metric in m["dev"] and np.isfinite(m["dev"][metric])


def test_help_documents_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["teacher", "--help"])
    text = capsys.readouterr().out
    for flag in ("--task", "--data-dir", "--out", "--overwrite", "--resume", "--seed", "--epochs",
                 "--max-train-examples", "--device", "--config", "--stop-after-steps"):
        assert flag in text
    assert "(default: 42; in [0, " in text and "(default: 3; >= 1)" in text      # defaults and ranges


def test_selection_split_of_whole_sentences_keeps_their_phrases_out_of_training(tmp_path, capsys):
    """--selection-from sentences selects on SST-2 rows no other row holds and trains on none of their phrases;
    a random carve of SST-2's phrases is trained around and says so on stderr."""
    from naskd.data.selection import row_texts

    args = TINY + ["--selection-examples", "40", "--checkpoint-every", "0"]
    assert main(args + ["--selection-from", "sentences", "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr()
    assert "[teacher] selection split: 40 rows to select on, " in out.out and "warning" not in out.err
    m = json.loads((tmp_path / "s/metrics.json").read_text())
    assert m["train_examples"] == 160                    # the subsample is drawn from the rows left to train on
    # 4,000 random rows hold the longer phrases of enough of the 40 drawn among them (stopped after a step)
    assert main(args + ["--out", str(tmp_path / "r"), "--max-train-examples", "4000", "--stop-after-steps", "1"]) == 0
    err = capsys.readouterr().err
    assert "of the selection rows lie inside longer training rows" in err
    assert sum("--selection-from sentences" in line for line in err.splitlines()) == 1
    # the split itself: independent of the model, the carve on the whole training split
    texts = row_texts(read_columns(get_task("sst2"), DATA, "train"))
    from naskd.data.selection import carve_selection

    carve = carve_selection(texts, 40, np.random.default_rng([42, 5]), "sentences")
    sel = [texts[i] for i in carve.selection]
    assert np.mean([len(t.split()) for t in sel]) > 12          # whole sentences, not SST-2's short phrases
    kept = set(carve.train.tolist())
    assert not any(f" {texts[j]} " in f" {s} " for s in sel[:5] for j in kept)
