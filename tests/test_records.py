"""The typed records: a model's output (attributes, and reading by name as the old dicts were read) and
what every model kind returns."""
import pytest
import torch

from naskd.records import ModelOutput, Progress


def test_model_output_reads_by_attribute_and_by_name():
    logits, mask = torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool)
    out = ModelOutput(logits=logits, states=[torch.zeros(2, 4, 5)], mask=mask)
    assert out["logits"] is logits and out.mask is mask and out.get("word_mask") is None
    assert "logits" in out and "crf" not in out and "hidden" not in out
    assert out.keys() == ["logits", "states", "mask"]
    with pytest.raises(KeyError):
        out["crf"]
    with pytest.raises(KeyError):
        out["hidden"]
    assert Progress() == Progress(epoch=0, epochs=1, step=0, fraction=0.0)


def test_every_student_kind_returns_a_model_output():
    import numpy as np

    from naskd.genotype import sample_genotype
    from naskd.space.macro import MacroGenotype
    from naskd.space.spec import load_space
    from naskd.students.baselines import BiLSTMStudent
    from naskd.students.fixed import FixedStudent
    from naskd.students.macro import MacroStudent

    g = sample_genotype(load_space("nas_kd"), layers=2, width=16, rng=np.random.default_rng(0))
    models = [FixedStudent(g, kind="single", num_labels=2, vocab_size=50, width=16),
              MacroStudent(MacroGenotype("macro", 8, (("conv3", 8),), "max", 8), vocab_size=50, kind="single",
                           num_labels=2, pair=False),
              BiLSTMStudent(vocab_size=50, kind="single", num_labels=2, pair=False, embed=8, hidden=4, relu=8)]
    ids = torch.randint(1, 50, (3, 6))
    for m in models:
        out = m.eval()(input_ids=ids, attention_mask=torch.ones_like(ids))
        assert isinstance(out, ModelOutput) and out.logits.shape == (3, 2) and out.mask.shape == (3, 6)
        assert all(s.shape[:2] == (3, 6) for s in out.states) and out.crf is None and out.word_mask is None
    tagger = FixedStudent(g, kind="tagging", num_labels=5, vocab_size=50, width=16).eval()
    out = tagger(input_ids=ids, attention_mask=torch.ones_like(ids), word_starts=torch.tensor([[1, 2, 4]] * 3))
    assert out.logits.shape == (3, 3, 5) and out.crf is tagger.crf and out.word_mask.all()
