"""`naskd search`: architecture search under distillation, by the strategy ``--strategy`` names.

Shared here: the configuration, the teacher, the data with cached teacher outputs, the criteria and the
run directory; the strategy (naskd.search.strategy: darts, spos, random) trains through the one loop
(:func:`naskd.train.fit`) and writes its results.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from .. import config as C
from ..data.readers import load_split, subsample
from ..data.selection import search_selection
from ..data.tasks import get_task
from ..distill import DistillationLoss, parse_kd, parse_pairs
from ..errors import ConfigError
from ..augment.data import resolve_augmented
from ..distill.context import kd_context
from .. import pipeline as P
from ..pipeline import DEFAULT_KD, DEFAULT_TAGGING_KD, default_kd, prepare, start_distillation_run
from ..space.spec import load_space
from ..utils.io import write_text
from ..utils.runtime import pick_device, seed_everything

DEFAULT_STRATEGY = "darts"
SHARED_STRATEGIES = ("spos", "random")   # those whose candidates workers can evaluate through --storage
DARTS_SUBSAMPLE = 6000       # darts' default training subsample (spos and random default to all the rows)
STRATEGY_HELP = ("search strategy: darts (differentiable, cell spaces), spos (single-path one-shot supernet, then "
                 "NSGA-II over inherited weights on a selection split carved from train; cell, macro and teacher "
                 "spaces), random (standalone proxy training of sampled architectures at an equal share of "
                 "spos' budget), hyperband (standalone training of TPE-proposed architectures with Hyperband "
                 "pruning on the selection split: the fallback when a supernet does not rank, as spos' does not "
                 "on SST-2's macro space, Kendall tau -0.08 in benchmarks/results/ranking_sst2_macro.md) or gdas "
                 "(DARTS' architecture parameters over a macro space, one Gumbel-sampled path per step). The "
                 "default is darts, the strategy of the README's main job. On SST-2 no strategy beat random "
                 "search at equal budget (hyperband not distinguishable, spos and gdas worse; "
                 "benchmarks/results/strategy_budget_sst2_macro.md), and the student to ship at 2-68x the teacher's "
                 "throughput is random search's pick on the macro space (benchmarks/results/pareto_sst2.md): for a "
                 "student to ship, use --strategy random --space macro --speedup S")


@dataclass
class SearchConfig:
    task: str = C.field("sst2", help="task")
    strategy: str = C.field(DEFAULT_STRATEGY, help=STRATEGY_HELP)
    teacher: Optional[str] = C.field(None, help="teacher run directory from `naskd teacher` (default: "
                                                "runs/<task>-teacher, fine-tuned first if missing)")
    data_dir: Optional[str] = C.field(None, help="data root or task folder; default $NASKD_DATA_DIR")
    out: Optional[str] = C.field(None, help="run directory (default runs/<task>-search)")
    cache_dir: Optional[str] = C.field(None, help="teacher output cache (default $NASKD_CACHE_DIR or "
                                                  "~/.cache/naskd)")
    space: str = C.field("nas_kd", help="search space: a name in search_spaces/ (nas_kd, adabert: cell spaces; "
                                        "macro: depth, layer ops and widths, embedding width, with bilstm_soft "
                                        "inside; teacher: the teacher's first k layers) or a YAML path")
    layers: int = C.field(6, help="cells of a cell space (M_s); macro and teacher spaces declare their depths",
                          low=1)
    width: Optional[int] = C.field(None, help="hidden width (default: the space's, 64 for nas_kd; the "
                                              "paper's setting is 768 on a GPU)", low=1)
    nodes: Optional[int] = C.field(None, help="intermediate nodes per cell (default: the space's)", low=1)
    per_cell_alphas: bool = C.field(False, help="one set of alphas per cell instead of shared")
    order: int = C.field(1, help="1: first-order DARTS; 2: unrolled second order", choices=[1, 2])
    kd: Optional[str] = C.field(None, help=f"distillation criteria with weights: a*L_soft + (1-a)*L_hard + "
                                           f"b*L_intermediate is soft_ce=a,hard_ce=1-a,pkd=b (default "
                                           f"{DEFAULT_KD}; {DEFAULT_TAGGING_KD} for tagging tasks)")
    temperature: float = C.field(1.0, help="soft_ce temperature", low=0, low_open=True)
    pkd_pairs: Optional[str] = C.field(None, help="explicit student-cell:teacher-layer pairs for pkd, "
                                                  "e.g. 2:2,4:4 (default m(j)=round(j*M_t/M_s))")
    fsd_memory: Optional[int] = C.field(None, help="fsd_global memory size (default 100, 300 for large tasks)", low=1)
    epochs: int = C.field(6, help="search epochs", low=1)
    batch_size: int = C.field(32, help="batch size (each half)", low=1)
    lr: Optional[float] = C.field(None, help="weight learning rate (AdamW, cosine decay; default 5e-4 for darts, "
                                             "at 2e-3 the 6-cell supernet stayed at chance on SST-2; 1e-3 for spos "
                                             "and random, 5e-5 on the teacher space)", low=0, low_open=True)
    weight_decay: float = C.field(1e-2, help="weight decay", low=0)
    arch_lr: float = C.field(3e-3, help="darts, gdas: architecture learning rate (Adam, betas 0.5/0.999)", low=0, low_open=True)
    arch_weight_decay: float = C.field(1e-3, help="darts, gdas: architecture weight decay", low=0)
    xi: Optional[float] = C.field(None, help="second order: virtual step size (default: --lr)", low=0, low_open=True)
    dropout: float = C.field(0.1, help="dropout", low=0, high=1, high_open=True)
    max_train_examples: Optional[int] = C.field(None, help="seeded training subsample (default: 6000 for darts, "
                                                           "split in two halves, which keeps a 6-cell search on a "
                                                           "2-core CPU under 20 minutes; all the data for spos and "
                                                           "random, the selection split carved from it)", low=4)
    selection_examples: int = C.field(5000, help="spos, random, hyperband, gdas: rows carved (seeded by --data-seed) from the "
                                                 "training rows to choose architectures on; never trained on, "
                                                 "and dev is never used to choose", low=1)
    selection_from: str = C.field("rows", help="spos, random, hyperband, gdas: how the selection split is "
                                               "carved: rows (at random from the training rows) or sentences "
                                               "(among the rows no other training row contains, every row inside "
                                               "them, and the synthetic rows made from those, kept out of "
                                               "training: SST-2's training phrases would otherwise leak into the "
                                               "split; see naskd/data/selection.py)",
                                  choices=["rows", "sentences"])
    sampling: str = C.field("uniform", help="spos: the path of each step, uniform over every dimension (SPOS, Guo "
                                            "et al. 2020), fair (each option of each dimension equally often in "
                                            "every block of steps, FairNAS, Chu et al. 2021) or sandwich (the "
                                            "largest, the smallest and 2 uniform paths each step, their losses "
                                            "averaged, BigNAS, Yu et al. 2020; sized spaces only)",
                            choices=["uniform", "fair", "sandwich"])
    trials: int = C.field(200, help="spos: architectures evaluated with inherited weights by the discrete search "
                                    "(Optuna NSGA-II: selection score x predicted latency); gdas: draws from "
                                    "its learned distribution scored so; --resume may raise it",
                          low=1)
    population: int = C.field(40, help="spos: NSGA-II population size", low=2)
    candidates: int = C.field(8, help="random: architectures sampled within the constraint, each trained "
                                      "standalone on 1/candidates of spos' training rows (--epochs passes)", low=1)
    candidate_rows: Optional[int] = C.field(None, help="random, hyperband: rows each candidate trains on per epoch "
                                                       "(random's default: an equal share, 1/candidates of spos' "
                                                       "training rows; hyperband's: 20000)",
                                            low=1)
    budget_rows: Optional[int] = C.field(None, help="hyperband: rows trained over all candidates before the "
                                                    "search ends (default: 3 x --epochs x the training rows, about "
                                                    "a spos run's wall-clock on a CPU)", low=1)
    rung_rows: int = C.field(5000, help="hyperband: rows between a candidate's selection-split evaluations (one "
                                        "rung of the Hyperband pruner)", low=1)
    speedup: Optional[float] = C.field(None, help="spos, random, hyperband, gdas: at least this many times the teacher's batch-128 "
                                                  "CPU throughput, predicted from the measured latency table; "
                                                  "without it (or --latency-ms) the whole Pareto front is returned",
                                       low=0, low_open=True)
    latency_threads: int = C.field(1, help="spos, random, hyperband, gdas: CPU threads the constraint is measured at. "
                                           "One thread by default, one request per core as `naskd bench` "
                                           "recommends for serving: on the 2-core reference VM, in a quiet run, "
                                           "a student timed twice at 2 threads differed by over 15 per cent for 8 of 20 "
                                           "students, at 1 thread for none (benchmarks/results/"
                                           "lut_accuracy_macro.md); "
                                           "the pick is reported at every thread count", low=1)
    max_eval_examples: Optional[int] = C.field(None, help="seeded dev subsample", low=1)
    max_length: Optional[int] = C.field(None, help="maximum sub-tokens (default: the teacher's recipe)", low=8)
    top_k: int = C.field(2, help="incoming edges kept per node when deriving the genotype", low=1)
    max_identity: Optional[int] = C.field(None, help="at most this many identity edges per cell in the derived "
                                                     "genotype (P-DARTS); over it, the weakest take their "
                                                     "next-best op. `naskd derive` applies it to a finished run", low=0)
    grad_clip: float = C.field(5.0, help="gradient norm clip for the weights", low=0, low_open=True)
    seed: int = C.field(0, help="random seed", range=C.SEED)
    data_seed: int = P.data_seed_field()
    augmented: Optional[str] = P.augmented_field()
    augment: bool = P.augment_field()
    latency_ms: Optional[float] = C.field(None, help="spos, random, hyperband, gdas: batch-1 forward time (ms per sentence, on this "
                                                     "machine, predicted over the dev length distribution) the "
                                                     "student must meet", low=0, low_open=True)
    latency_table: Optional[str] = C.field(None, help="spos, random, hyperband, gdas: the per-part latency table to read and "
                                                      "extend instead of this machine's cached one (it must have "
                                                      "been measured on this machine and torch version)")
    storage: Optional[str] = C.field(None, help="spos, random: an Optuna storage URL (sqlite:///FILE on one machine, "
                                                "postgresql://... across machines) through which `naskd worker RUN` "
                                                "processes share the evaluation of candidates (spos' discrete search, "
                                                "random's standalone trainings) with this one; a killed worker's "
                                                "candidate is evaluated again by another")
    study_name: Optional[str] = C.field(None, help="--storage: the study's name (default: one derived from the run "
                                                   "directory)")
    heartbeat: int = C.field(60, help="--storage: seconds between a worker's heartbeats; a candidate whose worker "
                                      "has been silent for three of them is failed and evaluated again", low=1)
    device: str = C.field("auto", help="auto, cpu or cuda (bf16 autocast on cuda)",
                          choices=["auto", "cpu", "cuda"])
    checkpoint_every: int = C.field(100, help="checkpoint every N steps (and at each epoch end)", low=1)
    stop_after_steps: Optional[int] = C.field(None, help="end cleanly after N steps, as if interrupted", low=1)
    log_every: int = C.field(20, help="write metrics.jsonl every N steps", low=1)

    def validate(self) -> None:
        from .strategy import get_strategy

        spec = get_task(self.task)
        strategy = get_strategy(self.strategy)
        kind = self.space_kind()
        strategy.check(self, kind)
        if self.strategy == "darts" and self.max_train_examples is None:
            self.max_train_examples = DARTS_SUBSAMPLE      # two halves of 3000: under 20 minutes on 2 cores
        if self.kd is None:
            # a space whose depth and width vary (macro, teacher) has no fixed layer pairs for PKD: logits only
            self.kd = default_kd(spec.name) if kind == "cell" else "logit_mse"
        # numbers are checked against their fields' declared ranges (naskd.config.resolve) before this
        parse_kd(self.kd)
        if self.speedup is not None and self.latency_ms is not None:
            raise ConfigError("give --speedup (batch-128 throughput) or --latency-ms (batch 1), not both")
        if self.storage is not None:
            from ..tune import check_storage
            from ..utils import dist

            if dist.launched():
                raise ConfigError("--storage shares candidates between `naskd worker` processes; under torchrun the "
                                  "processes already share the search: use one or the other")
            if self.strategy == "random" and self.stop_after_steps is not None:
                raise ConfigError("--stop-after-steps stops one process as if interrupted; a --storage search's "
                                  "candidates are shared between processes: interrupt it (Ctrl-C) and --resume")
            if self.strategy not in SHARED_STRATEGIES:
                raise ConfigError(f"--storage shares candidate evaluation between processes for --strategy "
                                  f"{' and '.join(SHARED_STRATEGIES)}; {self.strategy} does not evaluate candidates "
                                  "one by one (run it under torchrun to use more processes)")
            check_storage(self.storage, Path(self.out) if self.out else None)
            self.storage = absolute_sqlite(self.storage)      # workers may start in another folder
            if self.study_name is None:           # written into config.yaml, where workers read it
                from .shared import default_study_name

                self.study_name = default_study_name(self.out or f"runs/{spec.name}-search")
        if self.strategy == "darts" and self.selection_from != "rows":
            raise ConfigError("--selection-from is a setting of the strategies that choose on a selection split "
                              "(spos, random, hyperband, gdas); darts keeps the operations its alphas weigh most")
        if self.strategy != "darts":
            if self.per_cell_alphas:
                raise ConfigError(f"--per-cell-alphas is a darts setting; --strategy {self.strategy} samples one "
                                  "shared cell per path")
            if self.latency_table is not None:         # another machine's or torch version's: refused now
                from .lut import LatencyLUT

                LatencyLUT.load(self.latency_table)
            if kind != "cell":
                from ..space.oneshot import load_oneshot_space

                if kind != "teacher":            # the teacher space needs the teacher: checked once it is known
                    space = load_oneshot_space(self.space)
                    space.check()
                    if self.sampling == "sandwich":
                        from .strategy.oneshot import check_sandwich

                        check_sandwich(space)
                return
        space = self.resolved_space()
        try:
            space.check()
        except ConfigError as e:
            raise ConfigError(f"search space {space.source or space.name}: {e}") from None

    def space_kind(self) -> str:
        """The kind the space file declares (``kind:``; cell when absent)."""
        from ..assets import asset_path

        from ..space.oneshot import SPACE_KINDS, space_kind

        path = asset_path("search_spaces", self.space)
        kind = C.load_yaml(path).get("kind", "cell")
        if not isinstance(kind, str):
            raise ConfigError(f"search space {path}: 'kind' must be a name, got {kind!r}")
        try:
            space_kind(kind)
        except ConfigError:
            raise ConfigError(f"search space {path}: unknown space kind '{kind}'; known: "
                              f"{', '.join(sorted(SPACE_KINDS))}") from None
        return kind

    def resolved_space(self):
        from dataclasses import replace

        space = load_space(self.space)
        if self.width is not None:
            space = replace(space, width=self.width)
        if self.nodes is not None:
            space = replace(space, nodes=self.nodes)
        return space

    @property
    def pairs(self) -> list:
        return parse_pairs(self.pkd_pairs)


def absolute_sqlite(url: str) -> str:
    """``url`` with a relative SQLite file made absolute (against the working folder); any other URL as given."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:") or Path(u.database).is_absolute():
        return url
    return u.set(database=str(Path(u.database).expanduser().absolute())).render_as_string(hide_password=False)


def resolve_search_config(flags: dict, config_file: str | None = None) -> SearchConfig:
    file_layer = C.load_yaml(config_file) if config_file else {}
    return C.resolve(SearchConfig, file_layer, flags, source_names=[f"config {config_file}", "command-line flags"])


def run_search(cfg: SearchConfig, *, overwrite: bool = False, resume: bool = False) -> dict:
    from ..utils import dist
    from .strategy import SearchEnv, get_strategy

    t_start = time.time()
    seed_everything(cfg.seed)  # before anything draws random numbers (criterion projections too)
    spec = get_task(cfg.task)
    strategy = get_strategy(cfg.strategy)
    kind = cfg.space_kind()
    out, guard, teacher_dir, info = start_distillation_run("search", cfg, spec, overwrite=overwrite, resume=resume)
    space, kd = _space_and_criteria(cfg, spec, teacher_dir, info)
    # the data is there and readable: read before the run directory is made
    splits = (load_split(spec, cfg.data_dir, "train"), load_split(spec, cfg.data_dir, "dev"))
    device = pick_device(cfg.device)          # under torchrun this joins the process group
    latency = None
    if cfg.strategy != "darts":
        rows = len(splits[0]) if cfg.max_train_examples is None else min(len(splits[0]), cfg.max_train_examples)
        if cfg.selection_examples > rows // 2:
            raise ConfigError(f"--selection-examples {cfg.selection_examples} would leave fewer rows to train on "
                              f"than to select on ({rows} training rows); lower it to at most {rows // 2}")
        if cfg.selection_from == "sentences":     # a carve that cannot be made is refused now, not after the teacher
            search_selection(splits[0].to_dict(), subsample(len(splits[0]), cfg.max_train_examples, cfg.data_seed),
                             cfg.selection_examples, cfg.data_seed, "sentences")
        # timed on rank 0 alone (processes timing side by side would slow each other), which alone makes the
        # choices that read the times; a refused constraint stops every rank with its line
        held: dict = {}
        dist.from_main(lambda: held.update(lat=oneshot_latency(cfg, spec, teacher_dir, info, space, splits[1],
                                                               resume_dir=out if resume else None)))
        latency = held.get("lat")
    if cfg.storage is not None:
        from .shared import check_study

        # before the run directory is made or replaced: a search never joins, deletes or resumes another's study
        check_study(cfg, out, resume=resume, overwrite=overwrite)
    run_dir = dist.run_directory(out, **guard)
    if latency is not None and not resume:
        latency.save_scale(run_dir)
    if dist.is_main() and not resume:         # the record of what ran: never rewritten by a resume
        from ..utils.urls import shown as _shown

        write_text(run_dir / "config.yaml", yaml.safe_dump(
            {**C.to_dict(cfg), "teacher": str(teacher_dir), "space_kind": kind,
             "storage": cfg.storage and _shown(cfg.storage),    # a password in the URL is not written down
             "resolved_space": space.to_dict()}, sort_keys=False))
    with dist.main_first():                   # rank 0 fills the teacher cache; the others read it
        data = _prepared(cfg, spec, teacher_dir, kd, splits, device)
    env = SearchEnv(cfg=cfg, spec=spec, teacher_dir=Path(teacher_dir), teacher_info=info, data=data, kd=kd,
                    run_dir=run_dir, device=device, resume=resume, space=space, t_start=t_start,
                    latency=latency, overwrite=overwrite)
    return strategy(env).run()


def _space_and_criteria(cfg: SearchConfig, spec, teacher_dir, info):
    """(the search space bound to the task and teacher, the distillation criteria), checked against each
    other; the same random draws in the search process and in its workers."""
    if cfg.strategy == "darts":
        space = cfg.resolved_space()
        layers, width = cfg.layers, space.width
    else:
        space = oneshot_space(cfg, spec, teacher_dir, info)
        layers, width = space.fixed_shape() or (cfg.layers, 64)
        if space.fixed_shape() is None:
            probe = DistillationLoss(cfg.kd, kd_context(spec, info, int(info["num_layers"]), width, teacher_dir,
                                                        seed=cfg.seed))
            if probe.teacher_requests():
                raise ConfigError(f"--kd {cfg.kd} matches student layers to teacher layers, but the depth and width "
                                  f"of the {cfg.space} space's students vary; use criteria on logits (e.g. --kd "
                                  "logit_mse or soft_ce=0.5,hard_ce=0.5)")
    ctx = kd_context(spec, info, layers, width, teacher_dir, temperature=cfg.temperature,
                     pkd_pairs=cfg.pairs, fsd_memory=cfg.fsd_memory, seed=cfg.seed)
    return space, DistillationLoss(cfg.kd, ctx)         # validates pairs against the teacher, before work


def _prepared(cfg: SearchConfig, spec, teacher_dir, kd, splits, device):
    """The data with cached teacher outputs (naskd.pipeline.prepare), the criteria set up on it."""
    data = prepare(spec.name, teacher_dir, data_dir=cfg.data_dir, max_train_examples=cfg.max_train_examples,
                   max_eval_examples=cfg.max_eval_examples, seed=cfg.data_seed, requests=kd.teacher_requests(),
                   cache_dir=cfg.cache_dir, device=device, need_teacher=kd.needs_teacher,
                   augmented=resolve_augmented(cfg, spec, teacher_dir),
                   max_length=cfg.max_length, splits=splits)
    kd.setup(data.train_outputs, data.train)
    return data


WORKER_TIMEOUT = 24 * 3600.0


def wait_for_run(run_dir: Path, timeout: float) -> Path:
    """``RUN/config.yaml`` of a search run, waited for (up to ``timeout`` seconds) while ``RUN`` does not exist
    yet or is a search run still being set up (a worker may be started beside its search, which writes the
    directory once its teacher, data and latency table are ready). A folder of another kind is refused at
    once. Raises :class:`ConfigError`."""
    from ..utils.rundir import read_marker

    cfg_path, t0, said = run_dir / "config.yaml", time.time(), False
    while not cfg_path.is_file():
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir} is a file, not a search run directory: give the --out of a `naskd search "
                              "--storage URL` run")
        marker = read_marker(run_dir) if run_dir.is_dir() else None
        if run_dir.is_dir() and any(run_dir.iterdir()) and (marker or {}).get("command") != "search":
            raise ConfigError(f"{run_dir} is not a search run directory (no config.yaml): give the --out of a "
                              "`naskd search --storage URL` run")
        if time.time() - t0 > (timeout if marker is None else min(timeout, 60.0)):
            raise ConfigError(f"no search run appeared in {run_dir} within {min(timeout, 60.0) if marker else timeout:g} "
                              "s: give the --out of a running `naskd search --storage URL`, or raise --timeout")
        if not said:
            print(f"[worker] waiting for the search to write {cfg_path}", flush=True)
            said = True
        time.sleep(0.5)
    return cfg_path


def run_worker(run, *, storage: str | None = None, device: str = "auto", timeout: float = WORKER_TIMEOUT) -> dict:
    """``naskd worker RUN``: join the search in the run directory ``RUN`` (started with ``--storage``) as one
    more process evaluating its candidates (naskd.search.shared). Its settings are the run's
    ``config.yaml``; ``storage`` replaces the URL written there (needed when that URL held a password, which
    is not written down). Waits (up to ``timeout`` seconds) for the study and for what the candidates need
    (spos: the trained supernet; random: the queued candidates), evaluates trials until the search's number
    is complete, and returns {"evaluated_here": N} (0 when the search had already finished). Raises
    :class:`NaskdError` before any work for a directory that is not such a run."""
    import optuna

    from ..teachers.model import read_teacher_info
    from ..utils.urls import shown as _shown
    from ..utils import dist
    from . import shared
    from .strategy import SearchEnv, get_strategy

    if dist.launched():
        raise ConfigError("`naskd worker` is one process; start several of them instead of torchrun")
    run_dir = Path(run)
    cfg_path = wait_for_run(run_dir, timeout)
    doc = {k: v for k, v in C.load_yaml(cfg_path).items() if k not in ("space_kind", "resolved_space")}
    if doc.get("strategy") not in SHARED_STRATEGIES or not doc.get("storage"):
        raise ConfigError(f"the search in {run_dir} shares no candidates (strategy {doc.get('strategy')}, no "
                          f"--storage): workers join a --strategy {' or '.join(SHARED_STRATEGIES)} search started "
                          "with --storage URL")
    if storage is None and "***" in str(doc["storage"]):
        raise ConfigError(f"the storage URL in {cfg_path} had a password, which is not written down: give it "
                          "again with --storage URL")
    cfg = C.resolve(SearchConfig, doc, {"storage": storage or doc["storage"], "device": device, "out": str(run_dir)},
                    source_names=[str(cfg_path), "command-line flags"])
    t_start = time.time()
    opened = shared.open_shared_storage(cfg.storage, cfg.heartbeat)
    t0, said = time.time(), False
    while not shared.study_exists(opened, cfg.study_name):   # the search opens it before its supernet trains
        if time.time() - t0 > timeout:
            raise ConfigError(f"--storage {_shown(cfg.storage)} has no study {cfg.study_name} after {timeout:g} s: "
                              f"is the search in {run_dir} running with that storage?")
        if not said:
            print(f"[worker] waiting for the study {cfg.study_name} in {_shown(cfg.storage)}", flush=True)
            said = True
        time.sleep(shared.POLL_SECONDS)
    study = optuna.load_study(study_name=cfg.study_name, storage=opened)
    if study.user_attrs.get("finished"):
        print(f"[worker] the search in {run_dir} has finished: nothing to evaluate", flush=True)
        return {"evaluated_here": 0}
    # the search opens its study once its data and teacher outputs are prepared: this process reads them now,
    # while the supernet trains, so that it evaluates from the moment the search is ready
    seed_everything(cfg.seed)
    spec = get_task(cfg.task)
    teacher_dir = Path(cfg.teacher)
    info = read_teacher_info(teacher_dir, spec.name)
    space, kd = _space_and_criteria(cfg, spec, teacher_dir, info)
    splits = (load_split(spec, cfg.data_dir, "train"), load_split(spec, cfg.data_dir, "dev"))
    dev = pick_device(cfg.device)
    # the run's latency table and drift factors: predictions as the search's own
    latency = oneshot_latency(cfg, spec, teacher_dir, info, space, splits[1], resume_dir=run_dir)
    data = _prepared(cfg, spec, teacher_dir, kd, splits, dev)
    env = SearchEnv(cfg=cfg, spec=spec, teacher_dir=teacher_dir, teacher_info=info, data=data, kd=kd,
                    run_dir=run_dir, device=dev, resume=True, space=space, t_start=t_start, latency=latency)
    what = ("its supernet to finish training" if cfg.strategy == "spos" else "its candidates to be queued")
    if shared.wait_for(study, "ready", timeout=timeout, what=f"the search in {run_dir}: {what}") is None:
        print(f"[worker] the search in {run_dir} has finished: nothing to evaluate", flush=True)
        return {"evaluated_here": 0}
    print(f"[worker] {shared.worker_id()} evaluating {cfg.strategy} candidates of {run_dir} (study "
          f"{cfg.study_name})", flush=True)
    return get_strategy(cfg.strategy)(env).work(study)


def oneshot_latency(cfg: SearchConfig, spec, teacher_dir, info, space, dev_split, resume_dir=None):
    """The latency model of a one-shot search (the machine's table, the teacher's times, the constraint),
    its constraint checked against the space: before the run directory is made."""
    from transformers import AutoTokenizer

    from ..data.encode import encode
    from .strategy.oneshot import Latency

    max_length = cfg.max_length or int(info.get("recipe", {}).get("max_length", 128))
    dev = encode(spec, dev_split, AutoTokenizer.from_pretrained(str(teacher_dir)), max_length)
    lat = Latency(cfg, space, teacher_dir, dev.lengths, resume_dir=resume_dir)
    lat.check_feasible()
    return lat


def oneshot_space(cfg: SearchConfig, spec, teacher_dir, info):
    """The one-shot space ``cfg.space`` names, bound to the task and the teacher (checked)."""
    from transformers import AutoTokenizer

    from ..space.oneshot import BuildContext, load_oneshot_space

    vocab = len(AutoTokenizer.from_pretrained(str(teacher_dir)))
    ctx = BuildContext.for_task(spec, vocab, teacher_dir, info, dropout=cfg.dropout, seed=cfg.seed)
    if cfg.space_kind() == "cell":
        from ..space.cell_oneshot import CellSpace

        space = CellSpace(cfg.resolved_space(), layers=cfg.layers)
    else:
        space = load_oneshot_space(cfg.space, ctx=ctx)
    space.check()
    space.ctx = ctx
    return space
