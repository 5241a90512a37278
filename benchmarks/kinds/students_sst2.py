"""The searched SST-2 student against its baselines, through the same pipeline, then `naskd bench`.

Students (all distilled from the same teacher on the same training rows, with the same epoch budget):
the genotype of a search run; Tang et al.'s bilstm_soft at both of the paper's sizes (the better on dev
is reported); the teacher truncated to k layers (PKD); random genotypes of the same space with at least
the searched student's non-embedding parameters. Dev accuracy differences against the searched student
are paired-bootstrap 95% intervals. Resumable: finished runs are read, stopped ones resumed.

The studies: `python benchmarks/run.py students_sst2_<TABLE>` (benchmarks/studies/students_sst2_*.yaml; each
writes benchmarks/results/students_sst2_<label>.{md,json}, and bench_sst2_<label> with `bench`). Parameters
(`--set KEY=VALUE`; `--only searched` is `--set only=searched`):
       side by side: `--set lane=0/2 & --set lane=1/2; wait;` then the study without `lane`
       max_train_examples=0: the full training split
       finished_only=true bench=true [bench_also=[MODEL]]: bench the finished students (alone on the machine)
       bench_table_only=true: rewrite the bench table from the last bench run, measuring nothing
       width=W: the searched and random students W wide (runs named -wW; the baselines are shared)
       genotype=FILE: the searched student from a genotype derived again from the search (`naskd derive`)
       train_seed=S: the searched student retrained with another seed (runs named -sS; the baselines are
       shared); the seed_spread studies tabulate the seeds
       ema=D: the searched and random students keep a weight average of decay D (`naskd retrain --ema`;
       runs named -emaD, before any -sS); bilstm_soft and the truncated teacher keep their recipes and runs
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from common import DATA_DIR, Evidence, load_json, publish, retrain_once, study_command

from naskd.data.readers import read_columns
from naskd.data.tasks import get_task
from naskd.stats import paired_bootstrap


DEFAULT_SEARCH = "runs/sst2-search-seed0"
ONLY = ("searched", "bilstm", "random", "truncated")
PARAMS = {
    "search": (DEFAULT_SEARCH, "the search run whose genotype is the searched student"),
    "genotype": (None, "the searched student's genotype, if not the search's own genotype.json (e.g. one from "
                       "`naskd derive <search> --max-identity 0 -o FILE`)"),
    "teacher": ("runs/sst2-teacher", "the teacher run every student distils from"),
    "runs": ("runs/sst2-students", "where the students' runs go"),
    "max_train_examples": (20000, "training rows (0: the full training split)"),
    "epochs": (5, "epochs of every student"),
    "random": (3, "random genotypes"),
    "truncate_k": (3, "layers of the truncated teacher"),
    "augmented": (None, "a `naskd augment` run: every student trains on the original plus the teacher-labelled "
                        "synthetic rows"),
    "kd": (None, "criteria of the searched, truncated and random students (default: retrain's); bilstm_soft keeps "
                 "its recipe's logit_mse. With augmented, criteria on logits alone (soft_ce, hard_ce, logit_mse) "
                 "reuse the augment run's cache"),
    "epoch_examples": (None, "an epoch is this many training rows (for the long augmented set: dev scored and the "
                             "best kept after each)"),
    "embed_width": (None, "embedding width of the searched and random students (factorised: tables of this width, "
                          "a linear map to the cell width)"),
    "width": (None, "cell width of the searched and random students (default: the genotype's); their runs are "
                    "named -w<W>, the baselines are shared"),
    "lane": (None, "K/N: run every N-th student only (no tables)"),
    "only": (None, "train these runs only (no tables): one of searched, bilstm, random, truncated, e.g. the "
                   "searched student of another search while a lane trains the baselines"),
    "finished_only": (False, "train nothing: the tables of the students whose runs have finished (a study spread "
                             "over sessions), the others named as not finished"),
    "bench": (False, "also run naskd bench on the teacher and the students"),
    "bench_table_only": (False, "measure nothing: rewrite the bench table from the last bench run's bench.json "
                                "(e.g. after a change of columns)"),
    "bench_also": ([], "with bench: more student directories to bench in the same run (e.g. a baseline finished "
                       "on another budget; its row is named by its run directory)"),
    "train_seed": (0, "the searched student's training seed (weights, dropout, batch order; the data stay the "
                      "same): its run is named -s<S> and compared with the seed-0 baselines, to see how far one "
                      "retraining moves dev accuracy"),
    "ema": (None, "the searched and random students keep an exponential moving average of their weights with "
                  "this decay (naskd retrain --ema), scored and saved; their runs are named -ema<D>; bilstm_soft "
                  "and the truncated teacher keep their published recipes"),
    "data_dir": (DATA_DIR, "the data folder"),
}


def wait_for(path: Path, what: str, timeout_s: float = 6 * 3600) -> None:
    t0 = time.time()
    while not (path.is_file() and '"finished"' in path.read_text()):
        if time.time() - t0 > timeout_s:
            sys.exit(f"gave up waiting for {what} ({path})")
        time.sleep(60)


def kd_of_truncated(kd: dict) -> dict:
    """The truncated teacher's flags: the same criteria, its own (the teacher's) width and embeddings."""
    return {k: v for k, v in kd.items() if k not in ("embed_width", "width", "ema")}


def searched_name(args, tag: str) -> str:
    """The searched student's run; a search other than the default one gets its own (the baselines of the
    same tag are shared: they do not depend on the search)."""
    tag += f"-s{args.train_seed}" if args.train_seed else ""
    if args.genotype:
        return f"searched-{Path(args.search).name}-{Path(args.genotype).stem}-{tag}"
    return f"searched-{tag}" if args.search == DEFAULT_SEARCH else f"searched-{Path(args.search).name}-{tag}"


def genotype_path(args) -> str:
    """The searched student's genotype: the search's own, or one derived again from its alphas."""
    return args.genotype or f"{args.search}/genotype.json"


def searched_parameters(root: Path, searched_dir: Path, searched_flags: dict) -> int:
    """The searched student's non-embedding parameters: from a finished run of the same genotype and
    embedding width (they do not depend on the training budget), else after waiting for this one."""
    def same(d: Path) -> bool:
        c = d / "config.yaml"
        if not c.is_file():
            return False
        cfg = yaml.safe_load(c.read_text())
        return (cfg.get("genotype") == searched_flags["genotype"] and cfg.get("width") == searched_flags.get("width")
                and cfg.get("embed_width") == searched_flags.get("embed_width"))
    for d in [searched_dir] + sorted(root.glob("searched-*")):
        m = load_json(d / "metrics.json")
        if m is not None and m.get("status") == "finished" and same(d):
            return int(m["parameters_without_embeddings"])
    wait_for(searched_dir / "metrics.json", "the searched student's run")
    return int(load_json(searched_dir / "metrics.json")["parameters_without_embeddings"])


def run_lane(args, root: Path, tag: str, etag: str, base: dict, kd: dict, searched_flags: dict) -> None:
    """Every N-th of the runs (searched, both bilstm_soft sizes, truncated, random): several one-thread
    processes share the machine; a final run without `lane` reads them all and writes the tables."""
    g = json.loads(Path(genotype_path(args)).read_text())
    searched_dir = root / searched_name(args, etag)
    jobs = [(searched_dir, searched_flags)]
    jobs += [(root / f"bilstm-{h}-{r}-{tag}", {**base, "student": "bilstm_soft", "bilstm_hidden": h, "bilstm_relu": r})
             for h, r in ((150, 200), (300, 400))]
    jobs += [(root / f"random-{s}-{etag}", {**base, **kd, "student": "random", "sample_seed": s, "layers": g["layers"],
                                           "width": args.width or g["width"], "space": g["space"]})
             for s in range(args.random)]
    # the truncated teacher last: it is the slowest by far (5.3M non-embedding parameters)
    jobs += [(root / f"truncated-{args.truncate_k}-{tag}", {**base, **kd_of_truncated(kd), "student": "truncated_teacher",
                                                            "truncate_k": args.truncate_k})]
    k, n = (int(x) for x in (args.lane or "0/1").split("/"))
    for i, (out, flags) in enumerate(jobs):
        if i % n != k:
            continue
        if args.only and not out.name.startswith(args.only + "-"):
            continue
        if flags.get("student") == "random":     # at least the searched student's non-embedding parameters
            flags = {**flags, "min_params": searched_parameters(root, searched_dir, searched_flags)}
        retrain_once(out, flags)


def run(args) -> None:
    if args.only not in (None, *ONLY):
        raise SystemExit(f"only={args.only!r}: one of {', '.join(ONLY)}")
    if isinstance(args.bench_also, str):      # one model given as --set bench_also=DIR
        args.bench_also = [args.bench_also]
    if not args.finished_only:        # finished_only trains nothing: it needs no search run, only finished runs
        wait_for(Path(args.search) / "metrics.json", "the search run")
    root = Path(args.runs)
    tag = (f"{args.max_train_examples or 'all'}x{args.epochs}"
           + (f"of{args.epoch_examples // 1000}k" if args.epoch_examples else "") + ("-aug" if args.augmented else "")
           + (f"-kd-{args.kd.replace('=', '').replace(',', '-')}" if args.kd else ""))
    # the genotype students' runs (searched, random) also name the embedding width; the baselines do not
    # depend on it and are shared
    etag = (tag + (f"-e{args.embed_width}" if args.embed_width else "") + (f"-w{args.width}" if args.width else "")
            + (f"-ema{args.ema:g}" if args.ema else ""))
    base = {"task": "sst2", "teacher": args.teacher, "data_dir": args.data_dir, "epochs": args.epochs,
            "max_train_examples": args.max_train_examples or None}
    if args.epoch_examples:
        base["epoch_examples"] = args.epoch_examples
    if args.augmented:                # every student on the same original + synthetic rows
        base["augmented"] = args.augmented
    kd = {"kd": args.kd} if args.kd else {}
    if args.embed_width:              # the genotype students only: bilstm_soft and the teacher's layers keep theirs
        kd["embed_width"] = args.embed_width
    if args.width:
        kd["width"] = args.width
    if args.ema:
        kd["ema"] = args.ema
    searched_flags = {**base, **kd, "genotype": genotype_path(args)}
    if args.train_seed:
        searched_flags["seed"] = args.train_seed
    if args.lane or args.only:
        return run_lane(args, root, tag, etag, base, kd, searched_flags)
    missing = []
    ev = Evidence()

    def get(out: Path, flags: dict, name: str):
        """The run's metrics: trained (or resumed) here, or with finished_only read if it has finished (its
        directory, else the committed dev predictions of benchmarks/results)."""
        if not args.finished_only:
            return retrain_once(out, flags)
        m = ev.metrics(out)
        if m is None:
            missing.append(name)
        return m

    dirs = {"searched": root / searched_name(args, etag)}
    runs = {"searched": get(dirs["searched"], searched_flags, "searched")}
    if runs["searched"] is None:
        sys.exit(f"the searched student's run {dirs['searched']} has not finished: nothing to compare with")
    floor = runs["searched"]["parameters_without_embeddings"]
    bil = {(h, r): get(root / f"bilstm-{h}-{r}-{tag}", {**base, "student": "bilstm_soft", "bilstm_hidden": h,
                                                         "bilstm_relu": r}, f"bilstm_soft {h}/{r}")
           for h, r in ((150, 200), (300, 400))}
    done = {k: m for k, m in bil.items() if m is not None}
    if done:
        h, r = max(done, key=lambda k: done[k]["dev"]["accuracy"])
        name = f"bilstm_soft {h}/{r} (best on dev" + (")" if len(done) == len(bil) else ", the other size not finished)")
        runs[name], dirs[name] = done[(h, r)], root / f"bilstm-{h}-{r}-{tag}"
    name = f"truncated_teacher k={args.truncate_k}"
    dirs[name] = root / f"truncated-{args.truncate_k}-{tag}"
    runs[name] = get(dirs[name], {**base, **kd_of_truncated(kd), "student": "truncated_teacher",
                                  "truncate_k": args.truncate_k}, name)
    gfile = Path(genotype_path(args))
    g = json.loads(gfile.read_text()) if gfile.is_file() or not args.finished_only else {}
    for s in range(args.random):
        dirs[f"random {s}"] = root / f"random-{s}-{etag}"
        runs[f"random {s}"] = get(dirs[f"random {s}"], {**base, **kd, "student": "random", "sample_seed": s,
                                                        "min_params": floor, "layers": g.get("layers"),
                                                        "width": args.width or g.get("width"), "space": g.get("space")}, f"random {s}")
    runs = {k: m for k, m in runs.items() if m is not None}
    dirs = {k: d for k, d in dirs.items() if k in runs}
    # random runs are shared between searches of the same space: say which floor they were drawn for
    def config(d: Path) -> dict:
        return (yaml.safe_load((d / "config.yaml").read_text()) if not ev.from_store(d)
                else ev.stored(d)["metrics"].get("config", {}))

    floors = sorted({config(d).get("min_params") for k, d in dirs.items() if k.startswith("random ")} - {None})
    drawn = (f"random genotypes are drawn until they have at least the searched student's {floor:,} non-embedding "
             "parameters" if floors in ([], [floor]) else
             f"the random genotypes were drawn for at least {' / '.join(f'{f:,}' for f in floors)} non-embedding "
             f"parameters (another search's student; this searched student has {floor:,})")
    spec = get_task("sst2")
    gold = np.asarray(read_columns(spec, args.data_dir, "dev")["label"])
    labels = {k: ev.labels(d, len(gold)) for k, d in dirs.items()}
    correct = {k: (v == gold).astype(float) for k, v in labels.items()}
    stored = [d.name for d in dirs.values() if ev.from_store(d)]
    tdir = Path(args.teacher)
    t_logits = np.load(tdir / "dev_logits.npy") if (tdir / "dev_logits.npy").is_file() else None
    if t_logits is None:                # the teacher run is gone: its committed predictions
        t_labels = ev.labels(tdir, len(gold), finished=False)
    elif len(t_logits) != len(gold):    # the teacher was scored on a dev subsample: score it on all of dev
        from naskd.data.encode import encode
        from naskd.modeldir import load_model
        from naskd.predict import evaluate_model

        lm = load_model(args.teacher)
        dev = encode(spec, read_columns(spec, args.data_dir, "dev"), lm.tokenizer, lm.max_length)
        t_labels = np.asarray(evaluate_model(lm.model, spec, dev, batch_size=128, device="cpu",
                                             pad_id=lm.pad_id)[1]).argmax(-1)
    else:
        t_labels = t_logits.argmax(-1)
    correct["teacher"] = (t_labels == gold).astype(float)
    other_teacher = [n for n in stored if ev.teacher_differs(root / n, t_labels)]
    rows = [{"student": "teacher", "dev accuracy": float(correct["teacher"].mean())}]
    for name, m in runs.items():
        bs = paired_bootstrap(correct["searched"], correct[name]) if name != "searched" else None
        rows.append({"student": name, "description": m.get("description", ""), "dev accuracy": m["dev"]["accuracy"],
                     "params without embeddings": m["parameters_without_embeddings"],
                     "searched - this (95% CI)": "" if bs is None else
                     f"{bs['difference']:+.4f} [{bs['low']:+.4f}, {bs['high']:+.4f}]",
                     "verdict": "" if bs is None else ("searched better" if bs["low"] > 0 else
                                                       "this better" if bs["high"] < 0 else "not distinguishable"),
                     "train minutes": m["train_seconds"] / 60})
    t = paired_bootstrap(correct["teacher"], correct["searched"])
    rows[0]["searched - this (95% CI)"] = f"{-t['difference']:+.4f} [{-t['high']:+.4f}, {-t['low']:+.4f}]"
    label = etag if args.search == DEFAULT_SEARCH else f"{etag}_{Path(args.search).name}"
    if args.genotype:
        label += f"_{Path(args.genotype).stem}"
    if args.train_seed:
        label += f"_s{args.train_seed}"
    command = study_command()
    ev.record(tdir, t_labels, command=f"naskd teacher --task sst2 --out {tdir}")
    for k, d in dirs.items():
        if not ev.from_store(d):
            ev.record(d, labels[k], metrics=runs[k], teacher_labels=t_labels, command=command)
    for (h, r), m in done.items():    # both bilstm_soft sizes, not only the better one in the table
        d = root / f"bilstm-{h}-{r}-{tag}"
        if d not in dirs.values() and not ev.from_store(d):
            ev.record(d, ev.labels(d, len(gold)), metrics=m, teacher_labels=t_labels, command=command)
    ev.save()
    publish(f"students_sst2_{label}", f"SST-2 students against baselines ({tag}: training rows x epochs; "
            f"search {args.search}" + (f", genotype {args.genotype}" if args.genotype else "") + ")", rows,
            ["student", "description", "dev accuracy", "params without embeddings", "searched - this (95% CI)",
             "verdict", "train minutes"], command,
            notes="Every student is trained by `naskd retrain` on the same "
                  + (f"seeded {args.max_train_examples:,}-example SST-2 training subsample" if args.max_train_examples
                     else "full SST-2 training split (67,349 sentences)")
                  + (f" plus the synthetic rows of {args.augmented}" if args.augmented else "")
                  + f" for {args.epochs} epochs"
                  + (f" of {args.epoch_examples:,} rows each (consecutive slices of seeded passes)"
                     if args.epoch_examples else "")
                  + f" (best epoch on dev), distilled from {args.teacher}; {drawn}. Intervals: paired bootstrap "
                  "over the 872 dev sentences (10,000 resamples)."
                  + (f" Searched, truncated and random students with --kd {args.kd}." if args.kd else "")
                  + (f" Searched and random students with {args.embed_width}-wide embedding tables mapped to the "
                     "cell width by a linear layer (--embed-width)." if args.embed_width else "")
                  + (f" Searched and random students {args.width} wide (--width; the genotype's: "
                     f"{g.get('width')})." if args.width else "")
                  + (f" The searched student with training seed {args.train_seed} (--train-seed), the baselines "
                     "with seed 0." if args.train_seed else "")
                  + (f" Searched and random students scored and saved as a weight average of decay {args.ema:g} "
                     "(--ema); bilstm_soft and the truncated teacher with their own recipes." if args.ema else "")
                  + (f" Not finished yet (resumed by the same command with --lane): {', '.join(missing)}."
                     if missing else "")
                  + (f" Read from the committed dev predictions (benchmarks/results/{ev.path.name}; their run "
                     f"directories are gone): {', '.join(stored)}." if stored else "")
                  + (f" Distilled from a teacher run whose dev predictions differ from {args.teacher}'s (its "
                     f"fine-tuning was repeated): {', '.join(other_teacher)}." if other_teacher else ""))
    bench_json = root / f"bench-{label}" / "bench.json"
    if args.bench:
        from naskd.bench import run_bench

        if stored or not tdir.is_dir():
            sys.exit(f"bench needs the models' files: {', '.join(stored) or args.teacher} exist only as "
                     "committed predictions; retrain them (the same study without finished_only)")
        models = [args.teacher] + [str(d / "student") for d in dirs.values()] + args.bench_also
        r = run_bench(models, data_dir=args.data_dir, out=str(bench_json.parent), overwrite=True)
        print(r["_table"])
    elif args.bench_table_only:
        if not bench_json.is_file():
            sys.exit(f"{bench_json} does not exist: run with bench=true first")
        r = load_json(bench_json)
    if args.bench or args.bench_table_only:
        from naskd.bench import SIZE_AND_SPEED_COLUMNS

        keep = ["model", "dev accuracy", *SIZE_AND_SPEED_COLUMNS]
        publish(f"bench_sst2_{label}", f"naskd bench on SST-2: the teacher and the students ({label})",
                r["rows"], keep,
                f"{command}` (that is, `naskd bench --model runs/sst2-teacher --model <student> ...",
                notes=r["note"])
