"""The `naskd` command. Subcommands only parse flags, then call the library."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import config as C
from .errors import NaskdError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=None, help="YAML file of settings; flags override it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")


def _checked(parser: argparse.ArgumentParser, func):
    """``func`` after the numeric flags of ``parser`` are checked against their declared ranges (C.ranged):
    a bad number is a one-line ConfigError before any work."""
    def run(args) -> int:
        C.check_flags(parser, args)
        return func(args)
    return run


def _config_command(sub, cls, func, name: str, **kw) -> None:
    """A subcommand whose flags are the fields of the run-config dataclass ``cls`` (plus the common ones)."""
    p = sub.add_parser(name, **kw)
    C.add_arguments(p, cls)
    _common(p)
    p.set_defaults(func=func)


def _settings(args: argparse.Namespace) -> dict:
    skip = {"config", "overwrite", "resume", "command", "func"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def cmd_teacher(args) -> int:
    from .teachers.finetune import finetune_teacher, resolve_teacher_config

    cfg = resolve_teacher_config(_settings(args), args.config)
    source = None
    if cfg.distill_from:
        from .teachers.selfdistill import SelfDistillation

        source = SelfDistillation(cfg)
    metrics = finetune_teacher(cfg, overwrite=args.overwrite, resume=args.resume, source=source)
    if "ensemble" in metrics:
        print(f"[teacher] ensemble of {len(metrics['ensemble'])}: dev {metrics['dev']} (members: "
              f"{', '.join(str(d) for d in metrics['member_dev'])})")
    else:
        print(f"[teacher] {metrics['status']}: dev {metrics['dev']} (best epoch {metrics['best_epoch']})")
    return 0


def cmd_search(args) -> int:
    from .search.run import resolve_search_config, run_search

    cfg = resolve_search_config(_settings(args), args.config)
    from .utils import dist

    m = run_search(cfg, overwrite=args.overwrite, resume=args.resume)
    dist.say(f"[search] {m['status']}: genotype {m.get('genotype_text', '(none yet)')}")
    return 0


def cmd_worker(args) -> int:
    from .search.run import run_worker

    m = run_worker(args.run, storage=args.storage, device=args.device, timeout=args.timeout)
    print(f"[worker] done: {m['evaluated_here']} trial(s) evaluated by this process")
    return 0


def cmd_retrain(args) -> int:
    from .students.retrain import resolve_retrain_config, retrain

    cfg = resolve_retrain_config(_settings(args), args.config)
    from .utils import dist

    m = retrain(cfg, overwrite=args.overwrite, resume=args.resume)
    dist.say(f"[retrain] {m['status']}: dev {m['dev']} (best epoch {m['best_epoch']})")
    return 0


def cmd_augment(args) -> int:
    from .augment.run import examples, resolve_augment_config, run_augment

    cfg = resolve_augment_config(_settings(args), args.config)
    m = run_augment(cfg, overwrite=args.overwrite, resume=args.resume)
    out = cfg.out or f"runs/{m['task']}-augment"
    print(f"[augment] {m['status']}: {m['kept']:,} synthetic examples from {m['original_examples']:,} "
          f"(n_iter {m['n_iter']}); generation {m['generation_rate_per_s']} draws/s, teacher labelling "
          f"{m['label_rate_per_s']} ex/s; wrote {out}")
    for ex in examples(out, cfg.show):
        print("   ", " ||| ".join(str(ex[c]) for c in ("text", "text_pair") if c in ex), f"(from row {ex['source_idx']})")
    return 0


def cmd_tune(args) -> int:
    from .tune import parse_set, run_tune

    base = {"task": args.task, "data_dir": args.data_dir, "teacher": args.teacher, "genotype": args.genotype,
            **parse_set(args.set)}
    base = {k: v for k, v in base.items() if v is not None}
    if args.stage == "teacher" and args.genotype:
        raise NaskdError("--genotype is for --stage retrain; --stage teacher tunes the teacher's fine-tuning "
                         "(--teacher names its base encoder there)")
    r = run_tune(base, trials=args.trials, out=args.out, storage=args.storage, study_name=args.study_name,
                 space=tuple(x for x in args.space.split(",") if x) if args.space else None, seed=args.seed,
                 prune=args.prune, overwrite=args.overwrite, resume=args.resume, stage=args.stage)
    print(f"[tune] best {r['metric']} {r['best_value']:.4f} (trial {r['best_trial']}); settings "
          f"{r['best_settings']}; wrote {r['_out']}")
    return 0


def cmd_plot(args) -> int:
    from .plotting import plot_path

    out = args.output or ("alphas.png" if args.alphas else "cell.png")
    print(f"[plot] wrote {plot_path(args.target, out, alphas=args.alphas, overwrite=args.overwrite)}")
    return 0


def cmd_derive(args) -> int:
    from .search.derive import derive, pick_again
    from .utils.rundir import check_output_file

    # the search run's own files are its record: a new file may go there, an existing one is never replaced
    out = check_output_file(args.output, overwrite=args.overwrite, reads=[args.run], inside=[args.run])
    if args.speedup is not None or args.latency_ms is not None or (Path(args.run) / "pareto.json").is_file():
        if args.epoch is not None or args.top_k is not None or args.max_identity is not None:
            raise NaskdError("--epoch, --top-k and --max-identity re-derive a darts run's alphas; a spos or random "
                             "run is picked again from its front with --speedup or --latency-ms")
        g, c = pick_again(args.run, speedup=args.speedup, latency_ms=args.latency_ms)
        g.save(out)
        print(f"[derive] {c['text']}: selection score {c['score']:.4f}, predicted {c['speedup']:.2f}x the teacher's "
              f"throughput, {c['b1_ms']:.2f} ms at batch 1\n[derive] wrote {out}")
        return 0
    g = derive(args.run, epoch=args.epoch, top_k=args.top_k, max_identity=args.max_identity)
    g.save(out)
    print(f"[derive] {g.describe()}\n[derive] wrote {out}")
    return 0


def cmd_analyze(args) -> int:
    from .analysis import run_analyze_cka

    r = run_analyze_cka(args.model, args.teacher, out=args.out, overwrite=args.overwrite, task=args.task,
                        data_dir=args.data_dir, batch_size=args.batch_size, max_examples=args.max_eval_examples,
                        layerwise=args.layerwise, cache_dir=args.cache_dir, device=args.device)
    print(f"[analyze] mini-batch CKA {r['minibatch_cka']:.4f} (Nguyen et al.; all {r['examples_used']} examples at "
          f"once {r['full_cka']:.4f}); per-batch CKA diagonal mean {r['diagonal_mean']:.4f} (off-diagonal "
          f"{r['offdiagonal_mean']:.4f}) over {r['batches']} dev batches of {r['batch_size']}; wrote {r['_out']}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation import run_evaluate

    r = run_evaluate(args.model, task=args.task, split=args.split, file=args.file, fmt=args.format,
                     data_dir=args.data_dir, out=args.out, overwrite=args.overwrite, batch_size=args.batch_size,
                     device=args.device, max_length=args.max_length)
    shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r["metrics"].items())
    print(f"[evaluate] {r['role']} {r['model']} on {r['source']}: {r['examples']} examples; {shown}; "
          f"wrote {r['_out']}/metrics.json and predictions.jsonl")
    return 0


def cmd_export(args) -> int:
    from .export import export

    print(f"[export] wrote {export(args.model, args.format, args.output, overwrite=args.overwrite)}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench

    r = run_bench(args.model, data_dir=args.data_dir, out=args.out, overwrite=args.overwrite,
                  latency_examples=args.latency_examples, throughput_batch=args.batch_size, repeat=args.repeat,
                  onnx=args.onnx, threads=args.threads)
    print(r["_table"])
    print(f"[bench] wrote {r['_out']}/bench.md and bench.json")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with a user error on one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default said once: appended only when the help does not state it and there is one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (C._STATES_DEFAULT.search(text) or action.default in (None, argparse.SUPPRESS)
                or action.default is False):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from .augment.run import AugmentConfig
    from .search.run import SearchConfig
    from .students.retrain import RetrainConfig
    from .teachers.finetune import TeacherConfig

    parser = _Parser(
        prog="naskd", description="Neural architecture search under knowledge distillation for NLP students.",
        formatter_class=_Help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _config_command(sub, TeacherConfig, cmd_teacher,
                    "teacher", help="fine-tune a Hugging Face encoder as a task teacher",
                    description="Fine-tune a teacher; settings come from teachers/<task>.yaml, then "
                                "--config, then flags.")

    _config_command(sub, SearchConfig, cmd_search,
                    "search", help="architecture search under distillation (darts, spos, random, hyperband)",
                    description="NAS-KD search. darts writes genotype.json, history.json, metrics.jsonl; spos, "
                                "random and hyperband write pareto.json (every evaluated architecture), pareto.png, genotype.json "
                                "(the pick for the constraint) and metrics.json; all write checkpoints and the "
                                "resolved config.")

    p = sub.add_parser("worker", help="evaluate the candidates of a `naskd search --storage URL` run alongside it",
                       formatter_class=_Help,
                       description="Joins a spos or random search started with --storage: waits for its supernet "
                                   "(spos) or queued candidates (random), then takes trials from its Optuna study "
                                   "until the search's number is complete. Start as many as the machines allow; a "
                                   "killed worker's candidate is evaluated again by another. Across machines the "
                                   "run directory must be mounted at the same path on each.")
    p.add_argument("run", metavar="RUN", help="the search's run directory (its --out)")
    p.add_argument("--storage", default=None, help="the search's storage URL (default: the one in RUN/config.yaml; "
                                                   "needed when that URL held a password, which is not written down)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device")
    p.add_argument("--timeout", type=C.ranged(float, 0, low_open=True), default=24 * 3600.0,
                   help="seconds to wait for the search to open its study and get ready (> 0)")
    p.set_defaults(func=_checked(p, cmd_worker))

    _config_command(sub, RetrainConfig, cmd_retrain,
                    "retrain", help="train the student of a genotype from scratch with distillation",
                    description="Builds the fixed student from genotype.json through the supernet's op "
                                "tables and trains it on cached teacher outputs; writes <out>/student/.")

    p = sub.add_parser("evaluate", help="score a student or teacher on a split or a file",
                       formatter_class=_Help)
    p.add_argument("--model", required=True, help="student directory (naskd retrain) or teacher run (naskd teacher)")
    p.add_argument("--task", default=None, help="task (default: the model's)")
    p.add_argument("--split", default="dev", choices=["dev", "train"], help="split of the data root to score")
    p.add_argument("--file", default=None, help="score this file instead of a split")
    p.add_argument("--format", default="auto", choices=["auto", "glue", "label_text", "conll"],
                   help="--file layout: GLUE TSV (header or not), 'label sentence' lines, CoNLL columns")
    p.add_argument("--data-dir", default=None, help="data root (default $NASKD_DATA_DIR)")
    p.add_argument("--batch-size", type=C.ranged(int, 1), default=128, help="inference batch size (>= 1)")
    p.add_argument("--max-length", type=C.ranged(int, 8), default=None,
                   help="maximum sub-tokens, >= 8 (default: the model's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device")
    p.add_argument("--out", default=None, help="output directory (default runs/<task>-evaluate)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_checked(p, cmd_evaluate))

    p = sub.add_parser("export", help="export a student or teacher to ONNX or TorchScript",
                       formatter_class=_Help)
    p.add_argument("--model", required=True, help="student directory or teacher run")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="output format")
    p.add_argument("-o", "--output", default=None, help="file to write (default <model>/model.onnx or model.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="parameters, CPU latency and throughput (PyTorch and ONNX Runtime), "
                                     "dev metrics, with ratios to the teacher",
                       formatter_class=_Help)
    p.add_argument("--model", action="append", required=True, help="a student directory or teacher run; repeat")
    p.add_argument("--data-dir", default=None, help="data root (default $NASKD_DATA_DIR)")
    p.add_argument("--latency-examples", type=C.ranged(int, 1), default=None,
                   help="dev sentences timed at batch 1, >= 1 (default all)")
    p.add_argument("--batch-size", type=C.ranged(int, 1), default=128, help="throughput batch size (>= 1)")
    p.add_argument("--repeat", type=C.ranged(int, 1), default=3, help="throughput passes (median; >= 1)")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True, help="also time ONNX Runtime")
    p.add_argument("--threads", type=C.ranged(int, 1), default=None, help="CPU threads, >= 1 (default: torch's)")
    p.add_argument("--out", default=None, help="output directory (default runs/<task>-bench)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=_checked(p, cmd_bench))

    _config_command(sub, AugmentConfig, cmd_augment,
                    "augment", help="Tang et al.'s data augmentation, labelled by the teacher once",
                    description="Masking, POS-guided replacement and n-gram sampling; the synthetic set is "
                                "written as Parquet and labelled through the teacher output cache in parts "
                                "(resumable).")

    p = sub.add_parser("tune", help="Optuna over retraining or teacher fine-tuning hyperparameters (studies "
                                    "shareable via a database)",
                       formatter_class=_Help)
    p.add_argument("--task", default="sst2", help="task")
    p.add_argument("--genotype", default=None, help="genotype.json of the student to tune")
    p.add_argument("--teacher", default=None, help="teacher run directory (--stage teacher: the base encoder)")
    p.add_argument("--data-dir", default=None, help="data root (default $NASKD_DATA_DIR)")
    p.add_argument("--trials", type=C.ranged(int, 1), default=20,
                   help="trials in the study (counting earlier ones; >= 1)")
    p.add_argument("--stage", default="retrain", choices=["retrain", "teacher"],
                   help="retrain: a student's retraining, chosen on dev; teacher: the teacher's fine-tuning "
                        "recipe, chosen on a selection split carved from train (--set selection_examples=N, "
                        "1000 by default, of whole rows: the rows inside them are kept out of training; "
                        "--set selection_from=rows draws random rows instead), dev reported beside each trial")
    p.add_argument("--space", default=None, help="dimensions tuned (retrain: lr,dropout,weight_decay,kd; "
                                                 "teacher: lr,epochs,warmup,weight_decay,layer_lr_decay,"
                                                 "dropout,pooling; default: all of the stage's)")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="a fixed retrain setting for every trial (repeatable), e.g. --set epochs=3")
    p.add_argument("--storage", default=None, help="Optuna storage URL, e.g. sqlite:///runs/tune.db (shared, "
                                                   "resumable); default in memory")
    p.add_argument("--study-name", default=None, help="study name (default naskd-<task>)")
    p.add_argument("--seed", type=C.ranged(int, C.SEED.low, C.SEED.high), default=0,
                   help=f"sampler seed ({C.SEED.bounds()})")
    p.add_argument("--prune", action=argparse.BooleanOptionalAction, default=True, help="median pruning per epoch")
    p.add_argument("--out", default=None, help="directory of the trials (default runs/<task>-tune)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier study in --out (and its trials in "
                                                            "--storage)")
    p.add_argument("--resume", action="store_true", help="continue the study in --out (same settings and --storage; "
                                                         "--trials may grow); also how a second worker joins it")
    p.set_defaults(func=_checked(p, cmd_tune))

    p = sub.add_parser("plot", help="draw a found cell, or the alphas over the search epochs")
    p.add_argument("target", help="genotype.json, or a search run directory")
    p.add_argument("-o", "--output", default=None, help="PNG (or PDF/SVG) to write (default cell.png / alphas.png)")
    p.add_argument("--alphas", action="store_true", help="heat map of every edge's op weights over the epochs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("derive", help="derive a genotype again from a search run: a darts run's alphas (other rules, "
                                      "epoch), or a spos/random run's front under another constraint")
    p.add_argument("run", help="search run directory (darts: its history.json and config.yaml; spos, random: its "
                               "pareto.json)")
    p.add_argument("--speedup", type=C.ranged(float, 0, low_open=True), default=None,
                   help="spos, random: the most accurate evaluated architecture with at least this many times the "
                        "teacher's batch-128 throughput (predicted)")
    p.add_argument("--latency-ms", type=C.ranged(float, 0, low_open=True), default=None,
                   help="spos, random: the most accurate with at most this many ms at batch 1 (predicted)")
    p.add_argument("-o", "--output", type=Path, required=True, help="genotype JSON to write")
    p.add_argument("--epoch", type=C.ranged(int, 1), default=None,
                   help="the alphas after this epoch, 1-based as history.json counts them: 1 to the epochs the "
                        "run finished (default: the last)")
    p.add_argument("--top-k", type=C.ranged(int, 1), default=None,
                   help="incoming edges kept per node, 1 to nodes + 1 (default: the run's)")
    p.add_argument("--max-identity", type=C.ranged(int, 0), default=None,
                   help="at most this many identity edges per cell (P-DARTS); over it, the weakest identity "
                        "edges take their next-best op")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_checked(p, cmd_derive))

    p = sub.add_parser("analyze", help="analyses of a trained student against its teacher")
    p.add_argument("analysis", choices=["cka"], help="cka: teacher/student feature-structure CKA on dev batches")
    p.add_argument("--model", required=True, help="student directory (from `naskd retrain`)")
    p.add_argument("--teacher", required=True, help="teacher run directory")
    p.add_argument("--task", default=None, help="task (default: the student's)")
    p.add_argument("--data-dir", default=None, help="data root (default $NASKD_DATA_DIR)")
    p.add_argument("--cache-dir", default=None, help="teacher output cache")
    p.add_argument("--batch-size", type=C.ranged(int, 4), default=32,
                   help="mini-batch size, >= 4 (the unbiased HSIC needs 4 examples; default: 32)")
    p.add_argument("--max-eval-examples", type=C.ranged(int, 1), default=None, help="seeded dev subsample (>= 1)")
    p.add_argument("--layerwise", action="store_true", help="also a student-state x teacher-layer CKA matrix")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="device of the student's and the teacher's forwards (the CKA itself: float64 on the CPU)")
    p.add_argument("--out", default=None, help="run directory (default runs/<task>-analyze)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.set_defaults(func=_checked(p, cmd_analyze))
    return parser


def _one_line(e: BaseException) -> str:
    """The error's message on one line (a user error is one line on stderr)."""
    return " ".join(str(e).split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    # a warning about the user's data is one line too, not Python's location and source line
    python_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *a, **k: f"naskd {args.command}: warning: {message}\n"
    finished = False
    try:
        rc = args.func(args)
        finished = rc == 0
        return rc
    except NaskdError as e:
        print(f"naskd {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.filename is None and not isinstance(e, (PermissionError, FileNotFoundError)):
            raise                             # no path the user can act on: a bug, keep the traceback
        where = f" {e.filename}" if e.filename is not None else ""
        print(f"naskd {args.command}: error: cannot use{where}: {e.strerror or e} (a file or folder named on the "
              "command line, or one it writes to: check the path, its permissions and free space)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "worker":
            print("naskd worker: interrupted; the search goes on without this process (its random candidate, if "
                  "any, is queued again; start a worker again to help)", file=sys.stderr)
        else:
            print(f"naskd {args.command}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = python_format
        from .utils import dist

        # under torchrun every rank leaves the group before exiting; after a failure without waiting for
        # the others (they may be inside a collective this rank will never join)
        dist.shutdown(wait=finished)


if __name__ == "__main__":
    sys.exit(main())
