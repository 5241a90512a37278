"""The paths a spos supernet trains each step: uniform, FairNAS' strict fairness and BigNAS' sandwich rule,
checked by counting on the tiny macro space and the teacher space."""
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from naskd.errors import ConfigError
from naskd.search.strategy.oneshot import SANDWICH_RANDOM, SPOS, check_sandwich, sized_dimensions, sized_extreme
from naskd.space.macro import MacroSpace

MACRO = {"kind": "macro", "name": "tinymacro", "embed": [16, 8], "depth": [1, 3, 2],
         "ops": ["lstm", "conv3", "attn2"], "widths": [8, 16], "pooling": ["ends", "max", "mean"],
         "classifier": [8, 16]}


def spos(sampling: str, seed: int = 0) -> SPOS:
    s = SPOS.__new__(SPOS)
    s.env = SimpleNamespace(cfg=SimpleNamespace(seed=seed, sampling=sampling))
    s.space = MacroSpace.from_yaml(dict(MACRO), "test")
    return s


def test_sized_dimensions_are_the_numeric_ones():
    space = MacroSpace.from_yaml(dict(MACRO), "test")
    sized = sized_dimensions(space)
    assert set(sized) == {"embed", "depth", "classifier"} | {f"width_{i}" for i in range(3)}
    # one option is no size to choose: a space sized nowhere has no largest or smallest path
    flat = MacroSpace.from_yaml({**MACRO, "embed": [8], "depth": [2], "widths": [8], "classifier": [8]}, "test")
    assert sized_dimensions(flat) == []
    with pytest.raises(ConfigError, match="no sized dimension"):
        check_sandwich(flat)
    check_sandwich(space)


def test_sandwich_trains_the_largest_the_smallest_and_uniform_paths():
    s = spos("sandwich")
    ops_seen = Counter()
    for step in range(300):
        paths = s.paths(step)
        assert len(paths) == 2 + SANDWICH_RANDOM
        big, small = paths[0], paths[1]
        # the extremes of every sized dimension, whatever the order the options are listed in
        assert (big.embed, big.depth, big.classifier) == (16, 3, 16)
        assert all(w == 16 for _, w in big.layers)
        assert (small.embed, small.depth, small.classifier) == (8, 1, 8)
        assert all(w == 8 for _, w in small.layers)
        ops_seen.update(op for g in (big, small) for op, _ in g.layers)
        assert s.paths(step) == paths                      # a function of (seed, step): a resume trains the same
    # the unordered choices of the extremes are drawn, every operation about equally often (4 per step)
    assert set(ops_seen) == {"lstm", "conv3", "attn2"}
    n = sum(ops_seen.values())
    assert all(abs(c / n - 1 / 3) < 0.05 for c in ops_seen.values())
    # the uniform paths between reach depths the extremes never take
    assert {g.depth for step in range(50) for g in s.paths(step)[2:]} == {1, 2, 3}
    assert spos("sandwich", seed=1).paths(0) != s.paths(0) or spos("sandwich", seed=1).paths(1) != s.paths(1)


def test_sized_extreme_on_the_teacher_space_is_the_deepest_and_the_shallowest():
    from naskd.space.teacher_space import TeacherSpace

    space = TeacherSpace.__new__(TeacherSpace)
    space.layers, space.teacher_layers, space.name = (1, 2, 3, 4), 4, "teacher"
    rng = np.random.default_rng(0)
    assert sized_extreme(space, largest=True, rng=rng).k == 4
    assert sized_extreme(space, largest=False, rng=rng).k == 1


@pytest.mark.parametrize("sampling", ["uniform", "fair"])
def test_one_path_a_step_otherwise(sampling):
    s = spos(sampling)
    assert all(len(s.paths(step)) == 1 and s.paths(step) == [s.path(step)] for step in range(20))


def test_fair_sampling_takes_every_option_once_in_each_block():
    s = spos("fair")
    dims = s.space.dimensions()
    for name, opts in dims.items():
        m = len(opts)
        for block in range(5):
            got = [s.space.choices_of(s.path(block * m + i))[name] for i in range(m)]
            if name.startswith(("op_", "width_")) and not name.endswith("_0"):
                continue        # a layer past a path's depth is not in its genotype (the first is in every one)
            assert sorted(map(str, got)) == sorted(map(str, opts)), (name, block, got)
