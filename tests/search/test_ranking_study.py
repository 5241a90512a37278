"""Issue 21's ranking study (benchmarks/kinds/ranking_study.py) end to end on the tiny BERT and a tiny macro
space, run as a user runs it: the standalone scores, a second training seed (the ceiling a proxy can reach, and
every proxy against the seed mean), and another spos supernet as one more proxy row."""
import json
import subprocess

import numpy as np
import pytest

import yaml

from ..test_evidence import finished, run_study
from .test_distributed_search import MACRO
from .test_shared_search import command, env


def test_ranking_study_with_a_repeat_seed_and_a_supernet_variant(tiny_teacher, tmp_path):
    teacher, _ = tiny_teacher
    space = tmp_path / "macro.yaml"
    space.write_text(yaml.safe_dump(MACRO))
    cache = tmp_path / "cache"
    spos = tmp_path / "spos"
    r = subprocess.run(command(teacher, space, spos, "spos", "--trials", "8"), env=env(cache), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    args = {"spos_run": str(spos), "out": str(tmp_path / "ranking"), "archs": 4, "rows": 64, "epochs": 2,
            "pool": 40, "repeat_seeds": [1], "spos_variants": [str(spos)]}
    finished(run_study(tmp_path, "ranking_study", args, env={"NASKD_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}))
    doc = json.loads((tmp_path / "results" / "ranking_sst2_tinymacro.json").read_text())
    rows = {r["proxy"]: r for r in doc["correlations"]}
    main = rows["spos supernet, inherited score"]
    variant = next(r for name, r in rows.items() if name.startswith("spos supernet `spos`"))
    # the same supernet scored again through the variant path: the same scores, the same correlations
    assert [c["variant_scores"][str(spos)] for c in doc["candidates"]] == [c["inherited_score"] for c in doc["candidates"]]
    assert variant["kendall_tau"] == main["kendall_tau"] and variant["spearman_rho"] == main["spearman_rho"]
    assert len(doc["candidates"]) == 4 and all(set(c["repeat_scores"]) == {"1"} for c in doc["candidates"])
    assert [r["proxy"] for r in doc["ceiling"]] == ["standalone training again, seed 1 (the ceiling)"]
    # the repeat scored after its first of 2 epochs, read back from each candidate's own log
    from scipy.stats import kendalltau

    early = []
    for c in doc["candidates"]:
        std = json.loads((tmp_path / "ranking" / "standalone-seed1" / "pareto.json").read_text())["candidates"]
        index = next(x["index"] for x in std if x["genotype"] == c["genotype"])
        log = tmp_path / "ranking" / "standalone-seed1" / "candidates" / f"{index:03d}" / "log.jsonl"
        evals = [json.loads(x) for x in log.read_text().splitlines() if '"eval"' in x]
        early.append(next(e["eval"]["score"] for e in evals if e["epoch"] == 0))
    assert [c["repeat_first_epoch_scores"]["1"] for c in doc["candidates"]] == early
    (row,) = doc["early"]
    tau = kendalltau(early, [c["score"] for c in doc["candidates"]]).statistic
    assert row["kendall_tau"] == pytest.approx(tau) or (np.isnan(tau) and np.isnan(row["kendall_tau"]))
    assert all("Kendall tau against the seed mean [95% CI]" in r for r in doc["correlations"])
    repeat = yaml.safe_load((tmp_path / "ranking" / "standalone-seed1" / "config.yaml").read_text())
    first = yaml.safe_load((tmp_path / "ranking" / "standalone" / "config.yaml").read_text())
    assert repeat["seed"] == 1 and {k: v for k, v in repeat.items() if k not in ("seed", "out")} == \
        {k: v for k, v in first.items() if k not in ("seed", "out")}
    md = (tmp_path / "results" / "ranking_sst2_tinymacro.md").read_text()
    assert "standalone, seed 1" in md and "no proxy can rank these architectures better than" in md
