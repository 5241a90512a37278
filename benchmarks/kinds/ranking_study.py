"""Does the spos supernet rank architectures the way training them does? (issue 21, protocol 1)

N architectures of the space a finished `naskd search --strategy spos` run searched are drawn stratified by
predicted latency (a seeded pool of the space sorted by predicted batch-128 time at one thread, cut into N
bins of equal count, one drawn from each), each trained standalone with one short recipe (``rows`` rows x
``epochs`` epochs, the spos run's criteria, teacher, batch size and learning-rate default, cosine decay), and
scored on the spos run's selection split (carved from train with its --data-seed; dev is never read). Each
proxy is then compared with the standalone score by Kendall's tau and Spearman's rho with paired-bootstrap 95%
intervals (naskd.stats.rank_correlation): the supernet's inherited score on the same split, the parameter count
(with and without embeddings) and the predicted latency; with ``gdas_run``, the DARTS-family proxies of a
finished gdas run (darts itself searches cell spaces only): its supernet's inherited score and each
architecture's log-probability under its learned architecture parameters (the alpha score).

The standalone training runs through `naskd search` itself: a strategy registered here (``ranking-standalone``,
the ``random`` strategy with its candidates given and ``rows`` rows per epoch), so it resumes like any search
(run the same command again) and each candidate's score is in ``<out>/standalone/candidates.jsonl``.

The study: `python benchmarks/run.py ranking_sst2_macro` (benchmarks/studies/; one thread). Writes
benchmarks/results/ranking_<task>_<space>.{md,json} (every architecture's scores, so the table can be rebuilt
without the runs).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from common import REQUIRED, RESULTS, markdown_table, study_command

from naskd.search.strategy import register_strategy
from naskd.search.strategy.oneshot import RandomSearch, _OneShot, _PathModel
from naskd.stats import rank_correlation
from naskd.utils.io import write_json, write_text

STRATEGY = "ranking-standalone"
PROXIES = "ranking-gdas-proxies"
VARIANT = "ranking-spos-proxies"
STATE: dict = {}          # what the registered strategy reads: the genotypes, the rows, the supernet's run
PARAMS = {
    "spos_run": (REQUIRED, "a finished `naskd search --strategy spos` run directory"),
    "gdas_run": (None, ("a finished `naskd search --strategy gdas` run on the same space, teacher and --data-seed: "
                        "its supernet and alpha score become two more proxies")),
    "out": (REQUIRED, "the study's directory (resumed when it exists)"),
    "archs": (30, "architectures drawn (one from each of as many equal-count latency bins)"),
    "rows": (20000, "rows per epoch of each standalone training"),
    "epochs": (2, "epochs of each standalone training"),
    "pool": (2000, "architectures drawn before stratifying"),
    "seed": (0, "the seed of the pool and of the draw from each bin"),
    "repeat_seeds": ([], ("more training seeds of the standalone runs (each every architecture again, in "
                          "standalone-seedS): the tau between seeds is the ceiling any proxy can reach, and every "
                          "proxy is also ranked against the seed mean")),
    "spos_variants": ([], ("more finished spos runs on the same space, teacher, --data-seed and selection split "
                           "(trained longer, with fair paths, ...): each supernet's inherited score is one more "
                           "proxy row")),
}


@register_strategy
class Standalone(RandomSearch):
    """``random`` with its candidates given (STATE["genotypes"], in order) and STATE["rows"] rows per
    epoch; the spos supernet's inherited score of each is added when the search finishes."""

    name = STRATEGY
    summary = "the ranking study's standalone training of given architectures (benchmarks/kinds/ranking_study.py)"

    def draw(self, i: int):
        return self.space.genotype_from_dict(STATE["genotypes"][i], f"ranking genotype {i}")

    def rows_per_epoch(self) -> int:
        return min(int(STATE["rows"]), len(self.train_rows))

    def finish(self, candidates: list[dict], extra: dict) -> dict:
        net, steps = supernet_of(self.space, self.ctx, STATE["spos_run"])
        t0 = time.time()
        for c in candidates:
            g = self.space.genotype_from_dict(c["genotype"], "a ranking candidate")
            c["inherited_score"] = self.score(_PathModel(net, g))
        extra = {**extra, "inherited_seconds": round(time.time() - t0, 1), "supernet_steps": steps}
        return super().finish(candidates, extra)


def supernet_of(space, ctx, run: str):
    net = space.supernet(ctx)
    ck = torch.load(Path(run) / "checkpoint.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(ck["modules"]["model"])
    return net.eval(), int(ck["loop"]["global_step"])


@register_strategy
class GdasProxies(_OneShot):
    """Scores the given architectures (STATE["genotypes"]) with a finished gdas run's supernet on the
    selection split, and gives each its log-probability under that run's architecture parameters; trains
    nothing. Writes ``proxies.json`` in its run directory."""

    name = PROXIES
    summary = "the ranking study's DARTS-family proxies of given architectures (benchmarks/kinds/ranking_study.py)"
    space_kinds = ("macro",)

    def run(self) -> dict:
        from naskd.search.strategy.gdas import used_dimensions

        self.setup()
        net, steps = supernet_of(self.space, self.ctx, STATE["gdas_run"])
        probs = json.loads((Path(STATE["gdas_run"]) / "alphas.json").read_text())[-1]["probabilities"]
        rows, t0 = [], time.time()
        for i, d in enumerate(STATE["genotypes"]):
            g = self.space.genotype_from_dict(d, f"ranking genotype {i}")
            choices = self.space.choices_of(g)
            rows.append({"genotype": g.to_dict(), "gdas_inherited_score": self.score(_PathModel(net, g)),
                         "gdas_alpha_logprob": float(sum(np.log(probs[k][str(choices[k])])
                                                         for k in used_dimensions(self.space, g)))})
        out = {"command": "search", "strategy": PROXIES, "status": "finished", "gdas_run": STATE["gdas_run"],
               "gdas_supernet_steps": steps, "seconds": round(time.time() - t0, 1)}
        write_json(self.env.run_dir / "proxies.json", {**out, "rows": rows})
        write_json(self.env.run_dir / "metrics.json", out)
        return out


@register_strategy
class SposProxies(_OneShot):
    """Scores the given architectures (STATE["genotypes"]) with the supernet of another finished spos run
    (STATE["variant_run"]) on the selection split; trains nothing. Writes ``proxies.json``."""

    name = VARIANT
    summary = "the ranking study's inherited scores under another spos supernet (benchmarks/kinds/ranking_study.py)"
    space_kinds = ("macro",)

    def run(self) -> dict:
        self.setup()
        run = STATE["variant_run"]
        net, steps = supernet_of(self.space, self.ctx, run)
        t0 = time.time()
        rows = [{"genotype": d, "inherited_score": self.score(_PathModel(
            net, self.space.genotype_from_dict(d, f"ranking genotype {i}")))} for i, d in enumerate(STATE["genotypes"])]
        conf = yaml.safe_load((Path(run) / "config.yaml").read_text())
        out = {"command": "search", "strategy": VARIANT, "status": "finished", "spos_run": run,
               "supernet_steps": steps, "sampling": conf.get("sampling"), "epochs": conf.get("epochs"),
               "seconds": round(time.time() - t0, 1)}
        write_json(self.env.run_dir / "proxies.json", {**out, "rows": rows})
        write_json(self.env.run_dir / "metrics.json", out)
        return out


def stratified(space, ctx, lut, lengths, n: int, pool: int, seed: int) -> list[dict]:
    """``n`` genotypes, one from each of ``n`` equal-count bins of a seeded pool ordered by predicted
    batch-128 time at one thread; each with its predicted time."""
    rng = np.random.default_rng([seed, 71])
    seen, gs = set(), []
    for _ in range(pool * 20):
        g = space.sample(rng)
        k = space.describe(g)
        if k not in seen:
            seen.add(k)
            gs.append(g)
        if len(gs) == pool:
            break
    lut.ensure(space, gs, ctx, lengths, threads=(1,), batches=(128,), desc="ranking pool: part entries")
    ms = np.array([lut.predict(space, g, ctx, lengths, 1, 128) for g in gs])
    order = np.argsort(ms, kind="stable")
    pick = np.random.default_rng([seed, 73])
    out = []
    for b in np.array_split(order, n):
        i = int(pick.choice(b))
        out.append({"genotype": gs[i].to_dict(), "text": space.describe(gs[i]), "pool_b128_ms_1thread": float(ms[i])})
    return out


def search_once(flags: dict, out: Path) -> dict:
    """`naskd search` with ``flags`` into ``out``, resumed when a run is there; a NaskdError ends the study."""
    from naskd.errors import NaskdError
    from naskd.search.run import resolve_search_config, run_search

    try:
        return run_search(resolve_search_config({**flags, "out": str(out)}), resume=(out / "naskd-run.json").is_file())
    except NaskdError as e:
        raise SystemExit(f"ranking study: {e}") from None


def proxies_of(flags: dict, strategy: str, out: Path, key: str, run: Path, what: str) -> dict:
    """The proxies.json of a ``strategy`` run that trains nothing (it scores STATE["genotypes"] with the
    supernet of ``run``, which its metrics name under ``key``), checked to be of that run and those genotypes."""
    m = search_once({**{k: v for k, v in flags.items() if k != "candidates"}, "strategy": strategy}, out)
    doc = json.loads((out / "proxies.json").read_text())
    if m.get(key) != str(run) or [r["genotype"] for r in doc["rows"]] != STATE["genotypes"]:
        raise SystemExit(f"{out} scored another {what} run or other architectures; use another out")
    return doc


def first_epoch_score(run: Path, c: dict) -> float | None:
    """The selection score candidate ``c`` of the standalone run ``run`` had after its first epoch (its
    candidates/NNN/log.jsonl), or None when not recorded."""
    log = run / "candidates" / f"{c['index']:03d}" / "log.jsonl"
    if not log.is_file():
        return None
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("epoch") == 0 and isinstance(rec.get("eval"), dict) and "score" in rec["eval"]:
            return float(rec["eval"]["score"])
    return None


def training(v: dict) -> str:
    """How a supernet variant trained, for the table: its steps and the paths of each step."""
    if v["sampling"] == "sandwich":
        from naskd.search.strategy.oneshot import SANDWICH_RANDOM

        return (f"{v['supernet_steps']} steps of {2 + SANDWICH_RANDOM} paths: the sandwich rule, the largest, the "
                f"smallest and {SANDWICH_RANDOM} uniform")
    return f"{v['supernet_steps']} steps, {v['sampling']} paths"


def table(doc: dict) -> str:
    cands = doc["candidates"]
    truth = [c["score"] for c in cands]
    proxies = {"spos supernet, inherited score": [c["inherited_score"] for c in cands],
               "parameters": [c["params"] for c in cands],
               "parameters without embeddings": [c["params_without_embeddings"] for c in cands],
               "predicted batch-128 time (slower = better)": [c["b128_ms"] for c in cands]}
    if all("gdas_inherited_score" in c for c in cands):
        proxies["gdas supernet, inherited score"] = [c["gdas_inherited_score"] for c in cands]
        proxies["gdas alpha log-probability (the DARTS alpha score)"] = [c["gdas_alpha_logprob"] for c in cands]
    for v in doc.get("variants", []):
        proxies[f"spos supernet `{Path(v['spos_run']).name}` ({training(v)}), inherited score"] = [c["variant_scores"][v["spos_run"]] for c in cands]
    rows = []
    for name, vals in proxies.items():
        r = rank_correlation(vals, truth, seed=0)
        rows.append({"proxy": name, "Kendall tau [95% CI]": f"{r['kendall_tau']:.3f} [{r['kendall_low']:.3f}, "
                     f"{r['kendall_high']:.3f}]", "Spearman rho [95% CI]": f"{r['spearman_rho']:.3f} "
                     f"[{r['spearman_low']:.3f}, {r['spearman_high']:.3f}]", **{k: r[k] for k in r}})
    doc["correlations"] = rows
    repeats = doc.get("repeats", [])
    if repeats:
        means = np.mean([truth, *[[c["repeat_scores"][str(s)] for c in cands] for s in repeats]], axis=0)
        for row, vals in zip(rows, proxies.values()):
            r = rank_correlation(vals, means, seed=0)
            row["Kendall tau against the seed mean [95% CI]"] = (f"{r['kendall_tau']:.3f} [{r['kendall_low']:.3f}, "
                                                                 f"{r['kendall_high']:.3f}]")
        ceiling = []
        for s in repeats:
            r = rank_correlation([c["repeat_scores"][str(s)] for c in cands], truth, seed=0)
            ceiling.append({"proxy": f"standalone training again, seed {s} (the ceiling)",
                            "Kendall tau [95% CI]": f"{r['kendall_tau']:.3f} [{r['kendall_low']:.3f}, "
                            f"{r['kendall_high']:.3f}]", "Spearman rho [95% CI]": f"{r['spearman_rho']:.3f} "
                            f"[{r['spearman_low']:.3f}, {r['spearman_high']:.3f}]", **{k: r[k] for k in r}})
        doc["ceiling"] = ceiling
        early = []
        for s in repeats:                # the same runs scored part-way: what a multi-fidelity search sees early
            vals = [c.get("repeat_first_epoch_scores", {}).get(str(s)) for c in cands]
            if doc["epochs"] > 1 and None not in vals:
                r = rank_correlation(vals, truth, seed=0)
                early.append({"proxy": f"standalone training again, seed {s}, scored after its first of "
                              f"{doc['epochs']} epochs (a multi-fidelity rung: 1/{doc['epochs']} of the rows)",
                              "Kendall tau [95% CI]": f"{r['kendall_tau']:.3f} [{r['kendall_low']:.3f}, "
                              f"{r['kendall_high']:.3f}]", "Spearman rho [95% CI]": f"{r['spearman_rho']:.3f} "
                              f"[{r['spearman_low']:.3f}, {r['spearman_high']:.3f}]", **{k: r[k] for k in r}})
        doc["early"] = early
    sup, par = rows[0], rows[1]
    if sup["kendall_low"] > par["kendall_tau"] and sup["kendall_tau"] >= 0.5:
        verdict = "the supernet ranks better than the parameter count and meets the target (tau >= 0.5)"
    elif sup["kendall_tau"] > par["kendall_tau"]:
        verdict = ("the supernet's tau is above the parameter count's"
                   + (" but under the 0.5 target" if sup["kendall_tau"] < 0.5 else "")
                   + ("; the two intervals overlap" if sup["kendall_low"] <= par["kendall_high"] else ""))
    else:
        verdict = ("the supernet does not rank better than the parameter count: by the issue's rule, the spos "
                   "strategy should fall back to multi-fidelity multi-trial search")
    if doc.get("variants"):
        vrows = list(zip(doc["variants"], rows[len(rows) - len(doc["variants"]):]))
        v, best = max(vrows, key=lambda vr: vr[1]["kendall_tau"])
        verdict += (f". Of the other spos supernets, the best ranks at tau {best['kendall_tau']:.3f} "
                    f"[{best['kendall_low']:.3f}, {best['kendall_high']:.3f}] (`{Path(v['spos_run']).name}`, "
                    f"{training(v)}): "
                    + ("above the parameter count's" if best["kendall_low"] > par["kendall_tau"] else
                       "not above the parameter count's" if best["kendall_tau"] <= par["kendall_tau"] else
                       "above the parameter count's tau, its interval overlapping it"))
    if repeats:
        top = max(r["kendall_tau"] for r in doc["ceiling"])
        verdict += (f". Standalone training does not repeat its own ranking beyond tau {top:.3f} (another seed "
                    f"of the same recipe), so no proxy can rank these architectures better than that"
                    + (": the 0.5 target is above what this recipe's scores can show" if top < 0.5 else ""))
        for r in doc.get("early", []):
            verdict += (f". Scored after its first epoch, the repeat ranks at tau {r['kendall_tau']:.3f} "
                        f"[{r['kendall_low']:.3f}, {r['kendall_high']:.3f}]: the signal a multi-fidelity search "
                        f"(hyperband) prunes on at that rung")
    cols = ["proxy", "Kendall tau [95% CI]", "Spearman rho [95% CI]"] + (
        ["Kendall tau against the seed mean [95% CI]"] if repeats else [])
    per = [{"#": i, "genotype": c["text"], "standalone": c["score"], "inherited": c["inherited_score"],
            "params (M)": c["params"] / 1e6, "predicted b128 ms": c["b128_ms"],
            **{f"standalone, seed {s}": c["repeat_scores"][str(s)] for s in repeats}}
           for i, c in enumerate(sorted(cands, key=lambda c: -c["score"]))]
    return "\n".join([
        f"## Ranking: does the spos supernet order {doc['space']} architectures as training them does? ({doc['task']})",
        "", f"Made with `{doc['command']}`.", "",
        (f"{len(cands)} architectures drawn stratified by predicted batch-128 time (a pool of {doc['pool']}, "
         f"{len(cands)} equal-count bins, one from each), each trained standalone on {doc['rows']} rows x "
         f"{doc['epochs']} epochs ({doc['kd']}, cached teacher outputs), scored on the {doc['selection_rows']}-row "
         f"selection split carved from train (dev not read; the best of the epochs); inherited = the spos "
         f"supernet ({doc['supernet_steps']} steps, `{doc['spos_run']}`) on the same split. Intervals: paired "
         f"bootstrap over architectures (scipy.stats.bootstrap, 10,000 resamples). Standalone training took "
         f"{doc['train_seconds'] / 60:.0f} min on {doc['threads']} thread(s), the inherited scores "
         f"{doc['inherited_seconds']:.0f} s."), "",
        markdown_table(rows + doc.get("ceiling", []) + doc.get("early", []), cols), "",
        f"Verdict: {verdict}.", "",
        (f"DARTS-family proxies: the gdas run `{doc['gdas_run']}` ({doc['gdas_supernet_steps']} steps): its "
         "supernet's inherited score and the log-probability of each architecture under its learned "
         "architecture parameters." if doc.get("gdas_run") else
         "DARTS-family proxies: not measured (no `--gdas-run`; darts itself searches cell spaces only)."), "",
        "### Every architecture (by standalone score)", "",
        markdown_table(per, ["#", "genotype", "standalone", *[f"standalone, seed {s}" for s in repeats], "inherited",
                             "params (M)", "predicted b128 ms"]), ""])


def run(args) -> None:
    from naskd.data.encode import encode
    from naskd.data.readers import load_split
    from naskd.data.tasks import get_task
    from naskd.search.lut import LatencyLUT, representative_lengths
    from naskd.search.run import oneshot_space, resolve_search_config
    from naskd.teachers.model import read_teacher_info

    spos = Path(args.spos_run).expanduser()
    conf = yaml.safe_load((spos / "config.yaml").read_text())
    if conf.get("strategy") != "spos" or not (spos / "checkpoint.pt").is_file():
        raise SystemExit(f"{spos}: not a spos search run with its supernet checkpoint")
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    keep = ("task", "teacher", "data_dir", "cache_dir", "space", "kd", "batch_size", "lr", "weight_decay", "dropout",
            "selection_examples", "data_seed", "seed", "max_train_examples", "max_length", "latency_threads")
    flags = {k: conf[k] for k in keep if conf.get(k) is not None}
    flags.update(strategy=STRATEGY, candidates=args.archs, epochs=args.epochs, out=str(out / "standalone"))
    # a genotype list made once, then read back: a resumed study trains the same architectures
    gpath = out / "genotypes.json"
    if gpath.is_file():
        saved = json.loads(gpath.read_text())
        if (saved["archs"], saved["pool"], saved["seed"]) != (args.archs, args.pool, args.seed):
            raise SystemExit(f"{gpath} was drawn with other archs/pool/seed; use another out")
        genotypes = saved["genotypes"]
    else:
        from transformers import AutoTokenizer

        cfg = resolve_search_config(flags)
        spec = get_task(cfg.task)
        info = read_teacher_info(cfg.teacher, spec.name)
        space = oneshot_space(cfg, spec, cfg.teacher, info)
        dev = encode(spec, load_split(spec, cfg.data_dir, "dev"), AutoTokenizer.from_pretrained(cfg.teacher),
                     int(info.get("recipe", {}).get("max_length", 128)))
        lengths = representative_lengths(np.asarray(dev.lengths))
        genotypes = stratified(space, space.ctx, LatencyLUT.open(cache_dir=cfg.cache_dir), lengths, args.archs,
                               args.pool, args.seed)
        write_json(gpath, {"archs": args.archs, "pool": args.pool, "seed": args.seed, "genotypes": genotypes})
    gdas = Path(args.gdas_run).expanduser() if args.gdas_run else None
    if gdas is not None:
        gconf = yaml.safe_load((gdas / "config.yaml").read_text())
        same = ("space", "teacher", "data_seed", "selection_examples")
        if gconf.get("strategy") != "gdas" or not (gdas / "alphas.json").is_file() or \
                any(gconf.get(k) != conf.get(k) for k in same):
            raise SystemExit(f"{gdas}: not a finished gdas run with the spos run's {', '.join(same)}")
    STATE.update(genotypes=[g["genotype"] for g in genotypes], rows=args.rows, spos_run=str(spos),
                 gdas_run=str(gdas) if gdas else None)
    std = out / "standalone"
    t0 = time.time()
    metrics = json.loads((std / "metrics.json").read_text()) if (std / "metrics.json").is_file() else {}
    if metrics.get("status") != "finished" or "inherited_seconds" not in metrics:   # else read, not run again
        metrics = search_once(flags, std)
    if metrics.get("status") != "finished":
        raise SystemExit(f"stopped; run the same command again to resume ({time.time() - t0:.0f} s this time)")
    repeat_docs = {}
    for seed in args.repeat_seeds:        # the same architectures and recipe under another training seed
        rdir = out / f"standalone-seed{seed}"
        rm = json.loads((rdir / "metrics.json").read_text()) if (rdir / "metrics.json").is_file() else {}
        if rm.get("status") != "finished":
            rm = search_once({**flags, "seed": seed}, rdir)
        if rm.get("status") != "finished":
            raise SystemExit(f"stopped; run the same command again to resume ({time.time() - t0:.0f} s this time)")
        repeat_docs[seed] = json.loads((rdir / "pareto.json").read_text())
    proxies = None
    if gdas is not None:                 # a run of its own (it trains nothing), resumed like the other
        proxies = proxies_of(flags, PROXIES, out / "gdas-proxies", "gdas_run", gdas, "gdas")
    variants = []
    for v in args.spos_variants:          # each a run of its own that trains nothing, resumed like the others
        vrun = Path(v).expanduser()
        vconf = yaml.safe_load((vrun / "config.yaml").read_text()) if (vrun / "config.yaml").is_file() else {}
        same = ("space", "teacher", "data_seed", "selection_examples", "max_train_examples")
        if vconf.get("strategy") != "spos" or not (vrun / "checkpoint.pt").is_file() or \
                any(vconf.get(k) != conf.get(k) for k in same):
            raise SystemExit(f"{vrun}: not a spos search run with its checkpoint and the spos run's {', '.join(same)}")
        STATE["variant_run"] = str(vrun)
        variants.append(proxies_of(flags, VARIANT, out / f"spos-variant-{vrun.name}", "spos_run", vrun, "spos"))
    doc = json.loads((std / "pareto.json").read_text())
    command = study_command()
    res = {"command": command, "task": doc["task"], "space": doc["space"], "pool": args.pool, "rows": args.rows,
           "epochs": args.epochs, "kd": conf.get("kd"), "selection_rows": doc["selection_examples"],
           "spos_run": str(spos), "supernet_steps": metrics["supernet_steps"],
           "gdas_run": str(gdas) if gdas else None,
           "gdas_supernet_steps": proxies["gdas_supernet_steps"] if proxies else None,
           "train_seconds": metrics["train_seconds"], "inherited_seconds": metrics["inherited_seconds"],
           "threads": int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())),
           "candidates": [{k: c[k] for k in ("genotype", "text", "score", "inherited_score", "params",
                                             "params_without_embeddings", "b1_ms", "b128_ms", "train_seconds")}
                          for c in doc["candidates"]]}
    res["repeats"] = list(repeat_docs)
    for seed, rdoc in repeat_docs.items():
        by_key = {json.dumps(c["genotype"], sort_keys=True): c["score"] for c in rdoc["candidates"]}
        early = {json.dumps(c["genotype"], sort_keys=True): first_epoch_score(out / f"standalone-seed{seed}", c)
                 for c in rdoc["candidates"]}
        for c in res["candidates"]:
            key = json.dumps(c["genotype"], sort_keys=True)
            c.setdefault("repeat_scores", {})[str(seed)] = by_key[key]
            if early[key] is not None:
                c.setdefault("repeat_first_epoch_scores", {})[str(seed)] = early[key]
    res["variants"] = [{k: v[k] for k in ("spos_run", "supernet_steps", "sampling", "epochs")} for v in variants]
    for v in variants:                   # the same architectures in the same order (checked above)
        by_key = {json.dumps(r["genotype"], sort_keys=True): r["inherited_score"] for r in v["rows"]}
        for c in res["candidates"]:
            c.setdefault("variant_scores", {})[v["spos_run"]] = by_key[json.dumps(c["genotype"], sort_keys=True)]
    if proxies:                          # the same architectures in the same order (checked above)
        by_key = {json.dumps(r["genotype"], sort_keys=True): r for r in proxies["rows"]}
        for c in res["candidates"]:
            r = by_key[json.dumps(c["genotype"], sort_keys=True)]
            c.update(gdas_inherited_score=r["gdas_inherited_score"], gdas_alpha_logprob=r["gdas_alpha_logprob"])
    md = table(res)
    name = f"ranking_{res['task']}_{res['space']}"
    write_json(RESULTS / f"{name}.json", res)
    write_text(RESULTS / f"{name}.md", md)
    print(md)

