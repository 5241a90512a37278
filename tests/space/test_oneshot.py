"""The contract every registered space kind keeps (naskd/space/oneshot.py), run for each kind: static
dimensions, choices that round-trip, samples inside the space, single paths equal to the standalone student
with inherited weights, fresh students of the same shape, JSON genotypes read back through load_genotype,
latency parts that build and run."""
import numpy as np
import pytest
import torch

from naskd.data.tasks import get_task
from naskd.search.lut import part_inputs
from naskd.space.cell_oneshot import CellSpace
from naskd.space.oneshot import SPACE_KINDS, BuildContext, load_genotype, load_oneshot_space, space_kind
from naskd.space.spec import SearchSpace

V = 60


def _space(kind, tmp_path, tiny_teacher):
    import yaml
    from transformers import AutoTokenizer

    if kind == "cell":
        s = CellSpace(SearchSpace("tinycell", ops=("conv3", "identity", "attn2", "lstm", "none"),
                                  aggregators=("max_pool", "self_attn_pool"), nodes=2, width=8), layers=2)
        return s, BuildContext(kind="single", num_labels=2, vocab_size=V, max_positions=32, dropout=0.1)
    if kind == "macro":
        f = tmp_path / "m.yaml"
        f.write_text(yaml.safe_dump({"kind": "macro", "name": "tinymacro", "embed": [6, 8], "depth": [1, 2],
                                     "ops": ["lstm", "dwconv5", "attn2"], "widths": [4, 8],
                                     "pooling": ["ends", "max", "mean"], "classifier": [3, 5]}))
        return load_oneshot_space(str(f)), BuildContext(kind="single", num_labels=2, vocab_size=V, dropout=0.1)
    teacher, _ = tiny_teacher
    from naskd.teachers.model import read_teacher_info

    ctx = BuildContext.for_task(get_task("sst2"), len(AutoTokenizer.from_pretrained(str(teacher))), teacher,
                                read_teacher_info(teacher), dropout=0.1)
    return load_oneshot_space("teacher", ctx=ctx), ctx


def test_every_kind_is_registered():
    for kind in ("cell", "macro", "teacher"):
        assert space_kind(kind).kind == kind
    assert set(SPACE_KINDS) >= {"cell", "macro", "teacher"}


@pytest.mark.parametrize("kind", ["cell", "macro", "teacher"])
def test_space_contract(kind, tmp_path, tiny_teacher):
    space, ctx = _space(kind, tmp_path, tiny_teacher)
    space.check()
    dims = space.dimensions()
    assert dims and all(len(v) >= 1 for v in dims.values())
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        g = space.sample(rng)
        assert space.contains(g)
        choices = space.choices_of(g)
        assert set(choices) == set(dims) and all(choices[k] in dims[k] for k in dims)   # static: every dimension
        assert space.from_choices(choices) == g
        path = tmp_path / "g.json"
        g.save(path)
        assert load_genotype(path) == g
        assert space.genotype_from_dict(g.to_dict()) == g
        seen.add(space.describe(g))
    assert 1 < len(seen) <= space.size()
    net = space.supernet(ctx).eval()
    g_ids = torch.Generator().manual_seed(1)
    L = 9
    mask = torch.arange(L)[None] < torch.tensor([L, 5, 2])[:, None]
    batch = {"input_ids": torch.randint(1, V, (3, L), generator=g_ids) * mask, "attention_mask": mask,
             "token_type_ids": torch.zeros(3, L, dtype=torch.long)}
    for i in range(4):
        g = space.sample(np.random.default_rng([7, i]))
        student = net.student(g).eval()
        with torch.no_grad():
            torch.testing.assert_close(student(**batch)["logits"], net(path=g, **batch)["logits"], rtol=1e-5,
                                       atol=1e-6)
        fresh = space.build_student(g, ctx)
        assert {k: v.shape for k, v in fresh.state_dict().items()} == \
            {k: v.shape for k, v in student.state_dict().items()}
        for part in space.latency_parts(g, ctx):
            assert part.count >= 1
            module, width = space.part_module(part.key, ctx)
            with torch.no_grad():
                module.eval()(*part_inputs(ctx, width, 2, 7))
