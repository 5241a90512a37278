"""The student table (naskd.students.kinds): every registered kind round-trips through student.json, the
older architecture names still load, an unknown one is refused naming the known, a module of no kind
cannot be saved, and retrain picks the kind from --student and the genotype's space kind."""
import json

import numpy as np
import pytest
import torch

from naskd.errors import NaskdError
from naskd.genotype import sample_genotype
from naskd.space.macro import MacroGenotype
from naskd.space.spec import load_space
from naskd.students import kinds as K
from naskd.students.io import load_student, save_student


@pytest.fixture(scope="module")
def tokenizer(tiny_random_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_random_bert))


def tiny(name, vocab, bert_dir):
    torch.manual_seed(0)
    if name == "cell":
        from naskd.students.fixed import FixedStudent

        g = sample_genotype(load_space("nas_kd"), layers=2, width=16, rng=np.random.default_rng(1))
        return FixedStudent(g, kind="single", num_labels=2, vocab_size=vocab, width=16)
    if name == "macro":
        from naskd.students.macro import MacroStudent

        return MacroStudent(MacroGenotype("macro", 8, (("conv3", 8),), "max", 8), vocab_size=vocab, kind="single",
                            num_labels=2, pair=False)
    if name == "bilstm_soft":
        from naskd.students.baselines import BiLSTMStudent

        return BiLSTMStudent(vocab_size=vocab, kind="single", num_labels=2, pair=False, embed=8, hidden=4, relu=8)
    from transformers import AutoConfig, AutoModel

    from naskd.students.baselines import TruncatedTeacher

    cfg = AutoConfig.from_pretrained(str(bert_dir))
    cfg.num_hidden_layers = 1
    return TruncatedTeacher(AutoModel.from_config(cfg, add_pooling_layer=False), "single", 2, "mean")


def test_the_table_holds_the_four_kinds_with_their_recipes():
    assert list(K.STUDENT_KINDS) == ["cell", "macro", "bilstm_soft", "truncated_teacher"]
    assert K.STUDENT_KINDS["bilstm_soft"].recipe["optimizer"] == "adadelta"       # Tang et al.'s
    assert K.STUDENT_KINDS["macro"].recipe == {"kd": "logit_mse"}
    assert K.student_kind("bilstm").name == "bilstm_soft" and K.student_kind("genotype").name == "cell"
    with pytest.raises(NaskdError, match="unknown student architecture 'lstm' .known: cell, macro, bilstm_soft, "
                                         "truncated_teacher"):
        K.student_kind("lstm")
    with pytest.raises(TypeError, match="cannot save a Linear as a student"):
        K.kind_of(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", ["cell", "macro", "bilstm_soft", "truncated_teacher"])
def test_every_kind_round_trips_and_its_old_name_loads(tokenizer, tiny_random_bert, tmp_path, name):
    m = tiny(name, len(tokenizer), tiny_random_bert).eval()
    assert K.kind_of(m).name == name
    path = tmp_path / name
    save_student(path, m, tokenizer, task="sst2")
    info = json.loads((path / "student.json").read_text())
    assert info["architecture"] == name
    ids = torch.randint(5, len(tokenizer), (3, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    loaded, _, _ = load_student(path)
    assert type(loaded) is type(m)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch)["logits"], m(**batch)["logits"], rtol=0, atol=0)
    old = {"cell": "genotype", "bilstm_soft": "bilstm"}.get(name)
    if old:                                    # a student saved before the table: its name still loads
        (path / "student.json").write_text(json.dumps({**info, "architecture": old}))
        again, _, _ = load_student(path)
        with torch.no_grad():
            torch.testing.assert_close(again(**batch)["logits"], m(**batch)["logits"], rtol=0, atol=0)


def test_retrain_kind_follows_the_genotype():
    cell = sample_genotype(load_space("nas_kd"), layers=2, width=16, rng=np.random.default_rng(1))
    macro = MacroGenotype("macro", 8, (("conv3", 8),), "max", 8)
    from naskd.space.teacher_space import TeacherGenotype

    assert K.retrain_kind("genotype", cell).name == "cell" and K.retrain_kind("random", cell).name == "cell"
    assert K.retrain_kind("genotype", macro).name == "macro"
    assert K.retrain_kind("genotype", TeacherGenotype("teacher", 1, 2)).name == "truncated_teacher"
    assert K.retrain_kind("bilstm_soft", None).name == "bilstm_soft"
