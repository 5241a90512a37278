"""``--strategy spos`` and ``--strategy random``: architectures ranked on a selection split carved from the
training rows, with measured CPU latency as the second objective.

spos (Guo et al. 2020, "Single Path One-Shot NAS with uniform sampling"): one supernet per space holds every
architecture's weights; each training step samples one path (uniformly, or FairNAS' strict fairness, Chu et
al. 2021) and trains it under the distillation criteria, or, under the sandwich rule (BigNAS, Yu et al. 2020,
sec. 3.1), the largest and the smallest path and two uniform ones, their losses averaged into one step. Then a
discrete search over the inherited weights: Optuna's NSGA-II (Deb et al. 2002) proposes architectures, each
scored on the selection split in seconds, against its latency predicted from the measured per-part table
(naskd.search.lut; FBNet's lookup table), with the constraint (``--speedup`` or ``--latency-ms``) as NSGA-II's
constraint function.

random (Li & Talwalkar 2019's baseline): architectures sampled within the constraint, each trained
standalone on an equal share of the same training rows (the proxy recipe), the best on the selection split
picked. Both write pareto.json, pareto.png, genotype.json and metrics.json.
"""
from __future__ import annotations

import json
import numbers
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...data.encode import bucket_batches, epoch_rows
from ...data.selection import LEAK_WARNING, inside_fraction, row_texts, search_selection
from ...errors import ConfigError, NaskdError
from ...network import count_parameters
from ...pipeline import batch_to
from ...predict import evaluate_model
from ...train import adamw, cosine_schedule, fit
from ...utils import dist
from ...utils.io import append_jsonl, atomic_path, write_json
from ...utils.progress import bar
from ...utils.runtime import seed_everything
from .. import pareto as P
from . import Strategy, register_strategy

PROBES = 4                 # fixed paths scored each supernet epoch (a progress signal, not a choice)
PROBE_ROWS = 1000
FEASIBILITY_DRAWS = 100    # genotypes drawn before training to see whether any meets the constraint
PREMEASURE = 100           # genotypes whose parts are measured together before the search
SANDWICH_RANDOM = 2        # uniform paths per step beside the largest and the smallest (BigNAS uses 2)


class _PathModel(nn.Module):
    """The supernet restricted to one path, with a student's call signature (for evaluate_model)."""

    def __init__(self, net, path):
        super().__init__()
        self.net, self.path = net, path
        self.crf = getattr(net, "crf", None)

    def forward(self, **batch):
        return self.net(path=self.path, **batch)


SAMPLING_SAYS = {"sandwich": f"sandwich rule (the largest, the smallest and {SANDWICH_RANDOM} uniform paths each step)"}


def sized_dimensions(space) -> list[str]:
    """The dimensions of ``space`` with more than one option, all numbers (depths, widths, sizes): the ones the
    sandwich rule takes at their extremes."""
    return [k for k, opts in space.dimensions().items()
            if len(opts) > 1 and all(isinstance(o, numbers.Real) and not isinstance(o, bool) for o in opts)]


def check_sandwich(space) -> None:
    """ConfigError, one line, when ``space`` has no sized dimension for the sandwich rule."""
    if not sized_dimensions(space):
        raise ConfigError(f"--sampling sandwich: search space {space.name} has no sized dimension (two or more "
                          f"options, every one a number) to find its largest and smallest path; use --sampling "
                          f"uniform or fair")


def sized_extreme(space, *, largest: bool, rng: np.random.Generator):
    """The largest (or smallest) path of ``space`` in BigNAS' sense (Yu et al. 2020, sec. 3.1, the sandwich
    rule): every sized dimension (:func:`sized_dimensions`) at its largest (smallest) option; a dimension
    without an order (an operation, a pooling) is drawn uniformly with ``rng``, as the paths between are."""
    sized = set(sized_dimensions(space))
    pick = max if largest else min
    return space.from_choices({k: pick(opts) if k in sized else opts[int(rng.integers(len(opts)))]
                               for k, opts in space.dimensions().items()})


def _key(g) -> str:
    return json.dumps(g.to_dict(), sort_keys=True)


class _OneShot(Strategy):
    space_kinds = ("cell", "macro", "teacher")

    # --- shared preparation ------------------------------------------------------------------
    def setup(self) -> None:
        env = self.env
        cfg, data = env.cfg, env.data
        self.space = env.space
        self.ctx = env.space.ctx
        n = len(data.train)
        labelled = np.arange(n) if data.train.has_label is None else np.nonzero(np.asarray(data.train.has_label))[0]
        if cfg.selection_examples > len(labelled) // 2:
            raise NaskdError(f"--selection-examples {cfg.selection_examples} would leave fewer rows to train on than "
                             f"to select on ({len(labelled)} labelled training rows); lower it to at most "
                             f"{len(labelled) // 2}")
        from ...data.readers import read_columns

        origin = np.asarray(data.train.idx)                         # each row's row of the whole split
        columns = read_columns(env.spec, cfg.data_dir, "train")
        if cfg.selection_from == "sentences":                      # whole rows; the rows inside them go too
            carve = search_selection(columns, origin[labelled],
                                     cfg.selection_examples, cfg.data_seed, "sentences")
            chosen = set(carve.selection.tolist())
            sel = np.sort(np.asarray([r for r in labelled if int(origin[r]) in chosen], dtype=np.int64))
            held = chosen | set(carve.dropped.tolist())
            dist.say(f"[{env.cfg.strategy}] selection split: {carve.describe()}", flush=True)
        else:
            perm = np.random.default_rng([cfg.data_seed, 5]).permutation(labelled)
            sel = np.sort(perm[: cfg.selection_examples])
            held = set(origin[sel].tolist())
            texts = row_texts(columns)                              # the labelled rows, in the subsample
            where = {int(r): k for k, r in enumerate(labelled)}
            share = inside_fraction([texts[int(origin[r])] for r in labelled], np.array([where[int(r)] for r in sel]))
            if share > LEAK_WARNING and dist.is_main():
                print(f"[{env.cfg.strategy}] warning: {share:.0%} of the selection rows lie inside longer training "
                      f"rows (phrases of one sentence, as in SST-2): the selection split overstates accuracy and "
                      f"may rank architectures unlike dev; --selection-from sentences carves whole rows instead",
                      file=sys.stderr, flush=True)
        # synthetic rows made from the held rows go too
        self.train_rows = np.array([r for r in range(n) if int(origin[r]) not in held], dtype=np.int64)
        self.selection = data.train.select(sel)
        self.lengths = data.train.lengths
        self.metric = env.spec.main_metric
        self.lr = cfg.lr if cfg.lr is not None else (5e-5 if self.space.kind == "teacher" else 1e-3)
        # the latency model is rank 0's alone under torchrun (it times on the machine): the choices that read it
        # (draws under the constraint, the discrete search, the pick) are made there and given to every rank
        self.lat = env.latency
        lat = self.lat
        self.lut, self.lut_lengths, self.threads, self.teacher, self.feasible = (
            (lat.lut, lat.lengths, lat.threads, lat.teacher, lat.feasible) if lat is not None else (None,) * 5)

    def build_supernet(self):
        """(the space's supernet on the device, seeded by --seed; its trainable weights with the criteria's),
        after :meth:`setup`."""
        env = self.env
        seed_everything(env.cfg.seed)
        net = self.space.supernet(self.ctx).to(env.device)
        env.kd.to(env.device)
        return net, [p for m in (net, env.kd) for p in m.parameters() if p.requires_grad]

    def latency(self, g) -> dict:
        return self.lat.latency(g)

    def meets(self, lat: dict) -> bool:
        return self.lat.meets(lat)

    def violation(self, lat: dict) -> float:
        return self.lat.violation(lat)

    def score(self, model) -> float:
        env = self.env
        metrics, _ = evaluate_model(model, env.spec, self.selection, batch_size=256, device=env.device,
                                    pad_id=env.data.pad_id)
        return float(metrics[self.metric])

    def record(self, g, score: float, trial: int, baseline: str | None = None) -> dict:
        lat = self.latency(g)
        n, n_emb = self._params(g)
        return {"trial": trial, "genotype": g.to_dict(), "text": self.space.describe(g), "score": score, **lat,
                "params": n, "params_without_embeddings": n - n_emb, "baseline": baseline}

    def _params(self, g) -> tuple[int, int]:
        cache = self.__dict__.setdefault("_param_cache", {})
        k = _key(g)
        if k not in cache:
            from dataclasses import replace

            # the count needs no teacher weights (its embedding tables take seconds to read and project),
            # except where the student is the teacher's own layers
            ctx = self.ctx if self.space.kind == "teacher" else replace(self.ctx, teacher_dir=None)
            with torch.random.fork_rng(devices=[]):
                cache[k] = count_parameters(self.space.build_student(g, ctx))
        return cache[k]

    def standalone(self, g, seed: int, kd_state: dict):
        """(student, optimiser) of a candidate trained standalone: ``g`` built with weights seeded by
        ``seed``, the criteria's own weights reset to ``kd_state``, AdamW over both."""
        env, cfg = self.env, self.env.cfg
        seed_everything(seed)
        student = self.space.build_student(g, self.ctx).to(env.device)
        env.kd.load_state_dict(kd_state)
        env.kd.to(env.device)
        params = [p for m in (student, env.kd) for p in m.parameters() if p.requires_grad]
        return student, adamw(params, lr=self.lr, weight_decay=cfg.weight_decay)

    def candidate_start(self) -> tuple[Path, list[dict], dict]:
        """Of a strategy that trains candidates standalone: its ``candidates.jsonl``, what an interrupted run
        recorded there (rank 0 reads it; every rank gets it), and the criteria's weights every candidate starts
        from."""
        path, log = dist.from_main(lambda: candidate_log(self.env))
        return path, log, criteria_state(self.env.kd)

    def baselines(self) -> dict:
        """{name: genotype} of the space's members that are shipped baselines (drawn on pareto.png)."""
        fn = getattr(self.space, "baselines", None)
        return dict(fn(self.ctx)) if callable(fn) else {}

    # --- candidate evaluation shared through --storage (naskd.search.shared) ----------------------
    def start_shared(self, directions: list[str], sampler):
        """The search process's study in ``--storage`` (refused when one of that name exists unless resumed
        or overwritten)."""
        from ..shared import start_study

        env = self.env
        return start_study(env.cfg, env.run_dir, resume=env.resume, overwrite=env.overwrite, directions=directions,
                           sampler=sampler)

    def shared_summary(self, study, candidates: list[dict]) -> dict:
        """What metrics.json says of a shared search: the storage (password masked), the study, and how many
        candidates each process evaluated."""
        from ...utils.urls import shown as _shown
        from ..shared import evaluated_by

        return {"storage": _shown(self.env.cfg.storage), "study_name": study.study_name,
                "evaluated_by": evaluated_by(candidates)}

    # --- results -------------------------------------------------------------------------------
    def finish(self, candidates: list[dict], extra: dict) -> dict:
        env, cfg = self.env, self.env.cfg
        P.mark_front(candidates)
        try:
            chosen = P.pick(candidates, speedup=cfg.speedup, latency_ms=cfg.latency_ms)
        except NaskdError as e:               # what was evaluated is kept: pick again from it with derive
            write_json(env.run_dir / "pareto.json", {**self._doc(candidates), "pick": None})
            raise NaskdError(f"{e}; every evaluated architecture is in {env.run_dir / 'pareto.json'} (`naskd derive "
                             f"{env.run_dir} --speedup S -o FILE` picks under another constraint)") from None
        g = self.space.genotype_from_dict(chosen["genotype"], "the pick")
        chosen["latency"] = self.lat.report(g)
        measured = {f"measured_b{b}_ms": chosen["latency"][f"threads_{self.threads}"][f"measured_b{b}_ms"]
                    for b in (1, 128)}
        chosen.update(measured)
        warns = []
        for b in (1, 128):
            p_, m_ = chosen[f"b{b}_ms"], measured[f"measured_b{b}_ms"]
            if abs(p_ - m_) > 0.15 * m_:
                warns.append(f"batch {b}: predicted {p_:.2f} ms, measured {m_:.2f} ms")
        if cfg.latency_ms is not None and measured["measured_b1_ms"] > cfg.latency_ms:
            warns.append(f"measured at batch 1 it is over --latency-ms {cfg.latency_ms:g}")
        if cfg.speedup is not None and self.teacher[128] / measured["measured_b128_ms"] < cfg.speedup:
            warns.append(f"measured it is under --speedup {cfg.speedup:g}")
        if warns:
            chosen["latency_warning"] = msg = (
                "the pick's measured time differs from the table's prediction by more than 15% ("
                + "; ".join(warns) + "): the table may have been measured while the machine was busy; delete "
                f"{self.lut.path} and search again on a quiet machine, or check with `naskd bench`")
            import warnings

            warnings.warn(msg)
        front = [c for c in candidates if c["on_front"]]
        doc = {**self._doc(candidates), "pick": chosen["trial"]}
        write_json(env.run_dir / "pareto.json", doc)
        g.save(env.run_dir / "genotype.json")
        base = {c["baseline"]: c for c in candidates if c.get("baseline")}
        P.plot_front(candidates, env.run_dir / "pareto.png", metric=self.metric, pick_=chosen, baselines=base,
                     speedup=cfg.speedup,
                     title=f"{cfg.strategy} on {env.spec.name}, {self.space.name} space: {len(candidates)} evaluated, "
                           f"{len(front)} on the front")
        out = {"command": "search", "strategy": cfg.strategy, "task": env.spec.name, "status": "finished",
               "space": self.space.name, "space_kind": self.space.kind, "kd": cfg.kd, "teacher": str(env.teacher_dir),
               "train_rows": len(self.train_rows), "selection_rows": len(self.selection),
               "selection_from": cfg.selection_from,
               "evaluated": len(candidates), "front": len(front), "genotype": chosen["genotype"],
               "genotype_text": chosen["text"], "pick": chosen, "constraint": doc["constraint"],
               "wall_seconds_this_process": round(time.time() - env.t_start, 1), **extra}
        write_json(env.run_dir / "metrics.json", out)
        dist.say(f"[search] {len(candidates)} evaluated, {len(front)} on the front; pick (constraint: "
                 f"{doc['constraint']['text']}; the most accurate meeting it): "
                 f"{chosen['text']}: selection {self.metric} {chosen['score']:.4f}, predicted {chosen['speedup']:.1f}x "
                 f"the teacher's throughput ({chosen['b128_ms']:.1f} ms per 128, measured {measured['measured_b128_ms']:.1f}; "
                 f"{chosen['b1_ms']:.2f} ms at batch 1, measured {measured['measured_b1_ms']:.2f}); wrote "
                 f"{env.run_dir}/pareto.json, pareto.png, genotype.json", flush=True)
        return out

    def _doc(self, candidates: list[dict]) -> dict:
        env, cfg = self.env, self.env.cfg
        return {"strategy": cfg.strategy, "space": self.space.name, "space_kind": self.space.kind,
                "task": env.spec.name, "metric": self.metric, "selection_examples": len(self.selection),
                "threads": self.threads, "lengths": list(map(int, self.lut_lengths)),
                "latency_table": str(self.lut.path), "teacher": {"b1_ms": self.teacher[1], "b128_ms": self.teacher[128]},
                "constraint": {"speedup": cfg.speedup, "latency_ms": cfg.latency_ms,
                               "text": P.constraint_text(cfg.speedup, cfg.latency_ms)},
                "candidates": candidates}

    def stopped(self, extra: dict) -> dict:
        out = {"command": "search", "strategy": self.env.cfg.strategy, "task": self.env.spec.name,
               "status": "stopped", "space": self.space.name,
               "wall_seconds_this_process": round(time.time() - self.env.t_start, 1), **extra}
        write_json(self.env.run_dir / "metrics.json", out)
        return out


class Latency:
    """The measured latency of a one-shot search: the machine's per-part table (naskd.search.lut), the
    lengths standing for the task's (quantiles of the dev lengths), the threads of the constraint, the
    teacher's times, and the constraint. Built before the run directory, so an impossible constraint is
    refused before any work."""

    def __init__(self, cfg, space, teacher_dir, dev_lengths, resume_dir=None):
        from ..lut import LatencyLUT, representative_lengths

        self.cfg, self.space, self.ctx = cfg, space, space.ctx
        self.threads = cfg.latency_threads
        self.lut = LatencyLUT.open(cfg.latency_table, cache_dir=cfg.cache_dir)
        self.lengths = representative_lengths(np.asarray(dev_lengths))
        with torch.random.fork_rng(devices=[]):          # timing draws nothing from the search's streams
            # the parts of many architectures measured together, in turns (each between the others, as in a
            # model), before the search asks for them one architecture at a time
            rng = np.random.default_rng([cfg.seed, 43])
            self.lut.ensure(space, [space.sample(rng) for _ in range(PREMEASURE)], self.ctx, self.lengths,
                            threads=(self.threads,), batches=(1, 128))
            self.lut.calibrate(space, self.ctx, self.lengths, threads=(self.threads,), batches=(1, 128))
            kept = self.read_scale(resume_dir)
            if kept is not None:              # a resumed run predicts as it did before its interruption
                self.lut.scale = kept
            for (t, b), f in ({} if kept is not None else
                              self.lut.drift(space, self.ctx, self.lengths, threads=(self.threads,),
                                             batches=(1, 128))).items():
                if (t, b) in self.lut.scale:
                    dist.say(f"[search] latency table: the machine is {abs(f - 1):.0%} {'slower' if f > 1 else 'faster'} "
                             f"at {t} thread{'s' if t > 1 else ''}, batch {b} than when the table was measured; its "
                             "predictions are scaled by the calibration students' times measured now", flush=True)
            self.teacher = {b: self.lut.teacher_ms(teacher_dir, self.ctx, self.lengths, self.threads, b)
                            for b in (1, 128)}
        self.feasible = None
        self.env_teacher = teacher_dir
        dist.say(f"[search] latency table {self.lut.path} ({self.threads} threads, lengths {self.lengths}); teacher "
                 f"{self.teacher[1]:.2f} ms at batch 1, {self.teacher[128]:.1f} ms per batch of 128", flush=True)

    SCALE_FILE = "latency_scale.json"

    @classmethod
    def read_scale(cls, run_dir) -> dict | None:
        """The drift factors a run searched with (``latency_scale.json`` in it), or None."""
        p = None if run_dir is None else Path(run_dir) / cls.SCALE_FILE
        if p is None or not p.is_file():
            return None
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            return {(int(t), int(b)): float(f) for t, b, f in doc["scale"]}
        except (ValueError, KeyError, TypeError):
            raise NaskdError(f"{p} is damaged; start the search again with --overwrite") from None

    def save_scale(self, run_dir) -> None:
        """Keep the drift factors of this search in its run directory, so a resume predicts the same."""
        write_json(Path(run_dir) / self.SCALE_FILE,
                   {"about": "latency table drift factors (now / when measured) this search predicts with",
                    "scale": [[t, b, f] for (t, b), f in sorted(self.lut.scale.items())]})

    def latency(self, g) -> dict:
        """b1_ms (per sentence), b128_ms (per batch of 128), speedup (teacher b128 / b128) and speedup_b1:
        predicted from the table, measuring the parts it lacks first; batch 1 is
        the candidate measured whole instead (:func:`~naskd.search.lut.whole_model_setting`), with
        ``b1_source`` saying which."""
        from ..lut import whole_model_setting

        with torch.random.fork_rng(devices=[]):
            self.lut.ensure(self.space, [g], self.ctx, self.lengths, threads=(self.threads,), batches=(1, 128))
            b128 = self.lut.predict(self.space, g, self.ctx, self.lengths, self.threads, 128)
            if whole_model_setting(self.threads, 1):
                b1, source = self.whole_b1(g), "measured whole"
            else:
                b1, source = self.lut.predict(self.space, g, self.ctx, self.lengths, self.threads, 1), "table"
        return {"b1_ms": b1, "b128_ms": b128, "speedup": self.teacher[128] / b128, "speedup_b1": self.teacher[1] / b1,
                "b1_source": source}

    def throughput(self, g) -> dict:
        """b128_ms and speedup of ``g`` alone, predicted from the table (what ``--speedup`` constrains)."""
        with torch.random.fork_rng(devices=[]):
            self.lut.ensure(self.space, [g], self.ctx, self.lengths, threads=(self.threads,), batches=(128,))
            b128 = self.lut.predict(self.space, g, self.ctx, self.lengths, self.threads, 128)
        return {"b128_ms": b128, "speedup": self.teacher[128] / b128}

    def whole_b1(self, g) -> float:
        """Batch-1 milliseconds of ``g`` built standalone (seeded weights; the time does not depend on them),
        timed whole at the search's threads by the table's protocol; once per genotype."""
        from ..lut import LatencyLUT, warn_if_busy

        cache = self.__dict__.setdefault("_whole_b1", {})
        k = _key(g)
        if k not in cache:
            if not getattr(self, "_busy_checked", False):   # checked once per search, not per candidate
                self._busy_checked = True
                warn_if_busy(self.threads)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                student = self.space.build_student(g, self.ctx)
                cache[k] = LatencyLUT.measure_model(student, self.ctx, self.lengths, self.threads, 1)
            del student
        return cache[k]

    def meets(self, lat: dict) -> bool:
        return P.meets(lat, speedup=self.cfg.speedup, latency_ms=self.cfg.latency_ms)

    def report(self, g) -> dict:
        """The student ``g`` at every thread count of the table (1 and 2 where the machine has them), batch 1
        and 128: predicted from the table and measured whole by the same protocol, beside the teacher's."""
        from ..lut import machine_threads, whole_model_setting

        out = {}
        with torch.random.fork_rng(devices=[]):
            student = self.space.build_student(g, self.ctx)
            for t in sorted(set(machine_threads()) | {self.threads}):
                self.lut.calibrate(self.space, self.ctx, self.lengths, threads=(t,), batches=(1, 128))
                if t != self.threads:
                    self.lut.drift(self.space, self.ctx, self.lengths, threads=(t,), batches=(1, 128))
                self.lut.ensure(self.space, [g], self.ctx, self.lengths, threads=(t,), batches=(1, 128))
                row = {}
                for b in (1, 128):
                    if whole_model_setting(t, b):       # what the search used there: a measurement of its own
                        row[f"predicted_b{b}_ms"] = (self.whole_b1(g) if t == self.threads else
                                                     self.lut.measure_model(student, self.ctx, self.lengths, t, b))
                    else:
                        row[f"predicted_b{b}_ms"] = self.lut.predict(self.space, g, self.ctx, self.lengths, t, b)
                    row[f"measured_b{b}_ms"] = self.lut.measure_model(student, self.ctx, self.lengths, t, b)
                    row[f"teacher_b{b}_ms"] = self.lut.teacher_ms(self.env_teacher, self.ctx, self.lengths, t, b)
                row["predicted_speedup"] = row["teacher_b128_ms"] / row["predicted_b128_ms"]
                row["measured_speedup"] = row["teacher_b128_ms"] / row["measured_b128_ms"]
                out[f"threads_{t}"] = row
        return out

    def violation(self, lat: dict) -> float:
        """<= 0 when the constraint holds (Optuna's constraint convention)."""
        cfg = self.cfg
        if cfg.speedup is not None:
            return lat["b128_ms"] - self.teacher[128] / cfg.speedup
        if cfg.latency_ms is not None:
            return lat["b1_ms"] - cfg.latency_ms
        return 0.0

    def check_feasible(self) -> None:
        """Some architecture of the space must meet the constraint (checked on a seeded sample; the message
        names the fastest one seen). The first feasible draw is kept in ``feasible``."""
        cfg = self.cfg
        if cfg.speedup is None and cfg.latency_ms is None:
            return
        rng = np.random.default_rng([cfg.seed, 41])
        seen = []
        for _ in range(FEASIBILITY_DRAWS):
            g = self.space.sample(rng)
            # --speedup is a batch-128 constraint, which the table predicts: no whole batch-1 timing per draw
            lat = self.latency(g) if cfg.latency_ms is not None else self.throughput(g)
            if self.meets(lat):
                self.feasible = g             # spos evaluates it first: the front then holds a pick
                return
            seen.append((lat, g))
        if cfg.latency_ms is not None:          # the constraint is at batch 1: the fastest there
            lat, g = min(seen, key=lambda t: t[0]["b1_ms"])
        else:
            lat, g = max(seen, key=lambda t: t[0]["speedup"])
            lat = self.latency(g)
        raise NaskdError(f"no architecture of the {self.space.name} space meets "
                         f"{P.constraint_text(cfg.speedup, cfg.latency_ms)} (of {FEASIBILITY_DRAWS} sampled, the "
                         f"fastest, {self.space.describe(g)}, is predicted at {lat['speedup']:.2f}x the teacher's "
                         f"throughput, {lat['b1_ms']:.2f} ms at batch 1); relax the constraint or widen the space")


def candidate_log(env) -> tuple[Path, list[dict]]:
    """The run's ``candidates.jsonl`` and what it recorded: read on resume, removed on a fresh start."""
    path = env.run_dir / "candidates.jsonl"
    if not env.resume and path.exists():
        path.unlink()
    return path, _read_jsonl(path) if env.resume else []


def criteria_state(kd) -> dict:
    """A copy of the criteria's own weights (projections), to start every standalone candidate from."""
    return {k: v.detach().clone() for k, v in kd.state_dict().items()}


def _read_jsonl(path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:     # a line cut by a kill: the candidate is evaluated again
                break
    return out


@register_strategy
class SPOS(_OneShot):
    name = "spos"
    summary = "single-path one-shot supernet, then NSGA-II over inherited weights on a selection split"

    samples_paths = True

    @classmethod
    def check(cls, cfg, space_kind: str) -> None:
        super().check(cfg, space_kind)
        if cfg.sampling == "sandwich" and space_kind == "cell":
            raise ConfigError(f"--sampling sandwich needs sized dimensions (depths, widths) to find the largest and "
                              f"the smallest path; {cfg.space} is a cell space, whose choices are operations alone "
                              f"(use --sampling uniform or fair)")

    def paths(self, step: int) -> list:
        """The paths trained at global step ``step``, a function of (seed, step) alone so that a resumed run
        trains the same: one for ``uniform`` and ``fair``; for ``sandwich`` the largest and the smallest path
        (:func:`sized_extreme`) and ``SANDWICH_RANDOM`` uniform ones."""
        cfg = self.env.cfg
        if cfg.sampling != "sandwich":
            return [self.path(step)]
        rng = np.random.default_rng([cfg.seed, 29, step])
        return ([sized_extreme(self.space, largest=True, rng=rng), sized_extreme(self.space, largest=False, rng=rng)]
                + [self.space.sample(rng) for _ in range(SANDWICH_RANDOM)])

    def path(self, step: int):
        """The path of global step ``step`` under ``uniform`` or ``fair`` sampling: a function of (seed, step)
        alone, so a resumed run samples the same."""
        cfg = self.env.cfg
        if cfg.sampling == "uniform":
            return self.space.sample(np.random.default_rng([cfg.seed, 17, step]))
        choices = {}
        for d, (name, opts) in enumerate(self.space.dimensions().items()):
            m = len(opts)                     # every option once in each block of m steps (strict fairness)
            perm = np.random.default_rng([cfg.seed, 19, d, step // m]).permutation(m)
            choices[name] = opts[int(perm[step % m])]
        return self.space.from_choices(choices)

    def run(self) -> dict:
        self.setup()
        env, cfg = self.env, self.env.cfg
        data, device, kd, run_dir = env.data, env.device, env.kd, env.run_dir
        if cfg.sampling == "sandwich":
            check_sandwich(self.space)
        net, params = self.build_supernet()
        opt = adamw(params, lr=self.lr, weight_decay=cfg.weight_decay)
        rows = self.train_rows
        # opened before the supernet trains, so that workers started now find it and wait
        study = self.start_shared(["maximize", "minimize"], self.nsga2(cfg.seed)) if cfg.storage else None

        def batches_for_epoch(e):
            return [rows[b] for b in bucket_batches(self.lengths[rows], cfg.batch_size, seed=cfg.seed, epoch=e)]

        total = len(batches_for_epoch(0)) * cfg.epochs
        sched = cosine_schedule(opt, total)

        def loss_fn(batch, progress):
            teacher = batch.get("teacher", {})
            outs = [kd(net(path=p, **batch), teacher, batch, progress) for p in self.paths(progress.step)]
            if len(outs) == 1:
                return outs[0]
            # the sandwich rule: one step on the mean of its paths' losses (each criterion logged as that mean)
            return (sum(loss for loss, _ in outs) / len(outs),
                    {k: float(np.mean([logs[k] for _, logs in outs])) for k in outs[0][1]})

        probes = [self.space.sample(np.random.default_rng([cfg.seed, 23, i])) for i in range(PROBES)]
        probe_rows = self.selection.select(np.arange(min(PROBE_ROWS, len(self.selection))))

        def evaluate():
            scores = []
            for g in probes:
                m, _ = evaluate_model(_PathModel(net, g), env.spec, probe_rows, batch_size=256, device=device,
                                      pad_id=data.pad_id)
                scores.append(float(m[self.metric]))
            return {"probe_score": float(np.mean(scores)), "probe_min": min(scores), "probe_max": max(scores)}

        n_params = sum(p.numel() for p in net.parameters())
        dist.say(f"[search] spos on {env.spec.name}: space {self.space.name} ({self.space.kind}, "
                 f"{self.space.size():,} architectures), {n_params / 1e6:.2f}M supernet weights; {len(rows)} training "
                 f"rows, {len(self.selection)} selection rows carved from train (dev is never used to choose); "
                 f"{SAMPLING_SAYS.get(cfg.sampling, cfg.sampling + ' paths')}; kd {cfg.kd}; lr {self.lr}; "
                 f"{cfg.epochs} epochs x {total // cfg.epochs} steps on {device}; then {cfg.trials} NSGA-II trials; "
                 f"run directory {run_dir}", flush=True)
        result = fit(model=net, optimizer=opt, scheduler=sched, epochs=cfg.epochs, batches_for_epoch=batches_for_epoch,
                     make_batch=lambda r: batch_to(data.make_batch(r), device), loss_fn=loss_fn, evaluate=evaluate,
                     main_metric="probe_score", run_dir=run_dir, device=device, resume=env.resume,
                     stop_after_steps=cfg.stop_after_steps, checkpoint_every=cfg.checkpoint_every,
                     grad_clip=cfg.grad_clip, extra={"kd": kd}, desc="spos supernet", log_every=cfg.log_every,
                     shard="rows")
        train_info = {"supernet_steps": result.state.global_step, "supernet_epochs": result.state.epoch,
                      "supernet_sampling": cfg.sampling, "supernet_paths_per_step": len(self.paths(0)),
                      "supernet_seconds": round(result.state.train_seconds, 1), "supernet_history": result.state.history,
                      "supernet_weights": n_params, **self.processes(net, kd)}
        if result.stopped:
            return dist.from_main(lambda: self.stopped(train_info))
        t0 = time.time()
        if study is not None:
            candidates, shared = self.shared_search(net, result.state.global_step, study)
        else:
            candidates = dist.from_main(lambda: self.discrete_search(net, result.state.global_step))
            shared = {}
        return dist.from_main(lambda: self.finish(candidates, {
            **train_info, "discrete_search_seconds_this_process": round(time.time() - t0, 1), "trials": cfg.trials,
            "sampler": f"optuna NSGAIISampler(population_size={cfg.population}, seed={cfg.seed})", **shared}))

    def discrete_search(self, net, supernet_steps: int) -> list[dict]:
        """NSGA-II over the inherited weights of ``net`` (trained ``supernet_steps`` steps). Evaluations
        recorded by an interrupted run are replayed when they were made with the same supernet (a resume that
        trained it further, ``--epochs`` raised, scores everything again)."""
        import optuna

        env, cfg = self.env, self.env.cfg
        dims = self.space.dimensions()
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=self.nsga2(cfg.seed))
        for g in self.seeded_trials():
            study.enqueue_trial(self.space.choices_of(g))
        path, log = candidate_log(env)
        recorded = {r["trial"]: r for r in log}
        candidates = []
        net.eval()
        pbar = bar(cfg.trials, "spos discrete search", unit="arch")
        for t in range(cfg.trials):
            trial = study.ask()
            choices = {name: trial.suggest_categorical(name, list(opts)) for name, opts in dims.items()}
            g = self.space.from_choices(choices)
            rec = recorded.get(t)
            if (rec is not None and rec.get("supernet_steps") == supernet_steps
                    and _key(self.space.genotype_from_dict(rec["genotype"])) == _key(g)):
                c = rec                                  # evaluated before the interruption: the same answer
                self.__dict__.setdefault("_evaluated", {}).setdefault(_key(g), c)
            else:
                c = self.candidate(net, g, t, supernet_steps)
                append_jsonl(path, c)
            study.tell(trial, self.objectives(trial, c))
            candidates.append(c)
            pbar.update(1)
            pbar.set_postfix(best=f"{max(x['score'] for x in candidates):.4f}", refresh=False)
        pbar.close()
        return self.distinct(candidates)

    # the objectives and their constraint ------------------------------------------------------------------
    def nsga2(self, seed: int):
        """Optuna's NSGA-II sampler of this search, seeded by ``seed``. The constraint (<= 0 when met) rides
        on each trial: Trial.set_constraint since Optuna 5, before that the sampler's constraints_func reading
        it back (:meth:`objectives`)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        kw = {} if hasattr(optuna.trial.Trial, "set_constraint") else {
            "constraints_func": lambda t: t.user_attrs["constraint"]}
        return optuna.samplers.NSGAIISampler(population_size=self.env.cfg.population, seed=seed, **kw)

    def objectives(self, trial, c: dict) -> list[float]:
        """(selection score, predicted latency of the constraint's batch) of the candidate record ``c``, its
        constraint violation set on ``trial``."""
        if hasattr(trial, "set_constraint"):
            trial.set_constraint("latency", self.violation(c))
        else:
            trial.set_user_attr("constraint", [self.violation(c)])
        return [c["score"], c["b1_ms" if self.env.cfg.latency_ms is not None else "b128_ms"]]

    def seeded_trials(self) -> list:
        """The genotypes NSGA-II evaluates first: the space's shipped baselines, then the first draw that meets
        the constraint (so that the front holds a pick)."""
        return list(self.baselines().values()) + ([self.feasible] if getattr(self, "feasible", None) else [])

    def candidate(self, net, g, trial: int, supernet_steps: int) -> dict:
        """The record of ``g`` scored on the selection split with the inherited weights of ``net``: once per
        genotype in this process (NSGA-II proposes some more than once)."""
        k = _key(g)
        seen = self.__dict__.setdefault("_evaluated", {})
        if k in seen:
            return {**seen[k], "trial": trial}
        names = {_key(b): name for name, b in self.baselines().items()}
        c = self.record(g, self.score(_PathModel(net, g)), trial, names.get(k))
        c["supernet_steps"] = supernet_steps
        seen[k] = c
        return c

    def distinct(self, candidates: list[dict]) -> list[dict]:
        """One row per distinct architecture, the first evaluation of each."""
        seen, unique = set(), []
        for c in candidates:
            k = _key(self.space.genotype_from_dict(c["genotype"]))
            if k not in seen:
                seen.add(k)
                unique.append(c)
        return unique

    # candidate evaluation shared through --storage -----------------------------------------------------------
    def shared_search(self, net, supernet_steps: int, study) -> tuple[list[dict], dict]:
        """The discrete search as one of the study's processes: the baselines and the feasible draw queued
        first, the supernet announced (workers load its checkpoint), trials evaluated here and by the workers
        until ``--trials`` are complete; every completed one read back."""
        import optuna

        from ..shared import completed

        held = study.user_attrs.get("supernet_steps")
        if held is not None and held != supernet_steps:
            raise NaskdError(f"the study {study.study_name} holds candidates scored on a supernet trained {held} "
                             f"steps; this one has trained {supernet_steps}: start again with --overwrite")
        if not study.user_attrs.get("enqueued"):
            for g in self.seeded_trials():
                study.enqueue_trial(self.space.choices_of(g))
            study.set_user_attr("enqueued", True)
        study.set_user_attr("supernet_steps", supernet_steps)
        study.set_user_attr("finished", False)
        study.set_user_attr("ready", True)              # workers start evaluating now
        self.evaluate_trials(net, supernet_steps, study)
        candidates = self.distinct(completed(study.get_trials(deepcopy=False,
                                                              states=(optuna.trial.TrialState.COMPLETE,))))
        study.set_user_attr("finished", True)
        return candidates, self.shared_summary(study, candidates)

    def work(self, study) -> dict:
        """``naskd worker``: load the supernet the search trained (its checkpoint in the run directory) and
        evaluate the study's trials until ``--trials`` are complete."""
        from ...train import CHECKPOINT, load_checkpoint

        self.setup()
        steps = study.user_attrs["supernet_steps"]
        study.sampler = self.nsga2(self.env.cfg.seed + 1 + len(study.trials))   # not the search's own draws
        net, _ = self.build_supernet()
        loop = load_checkpoint(self.env.run_dir / CHECKPOINT, modules={"model": net, "kd": self.env.kd},
                               optimizers={}, schedulers={})
        if loop["global_step"] != steps:
            raise NaskdError(f"{self.env.run_dir / CHECKPOINT} holds the supernet at step {loop['global_step']}, the "
                             f"study's candidates are scored at step {steps}: its search is training again; start "
                             "the worker once it is ready")
        return self.evaluate_trials(net, steps, study)

    def evaluate_trials(self, net, supernet_steps: int, study) -> dict:
        import optuna

        from ..shared import evaluate_shared, worker_id

        cfg = self.env.cfg
        dims = self.space.dimensions()
        me, mine = worker_id(), []
        net.eval()

        def objective(trial):
            trial.set_user_attr("worker", me)
            g = self.space.from_choices({name: trial.suggest_categorical(name, list(opts))
                                         for name, opts in dims.items()})
            c = self.candidate(net, g, trial.number, supernet_steps)
            trial.set_user_attr("candidate", c)
            mine.append(c)
            return self.objectives(trial, c)

        pbar = bar(cfg.trials, "spos discrete search (shared)", unit="arch")

        def progress(trials):
            pbar.n = min(cfg.trials, sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials))
            pbar.set_postfix(here=len(mine), refresh=True)

        evaluate_shared(study, objective, lambda ts: sum(t.state == optuna.trial.TrialState.COMPLETE
                                                         for t in ts) >= cfg.trials,
                        queued_only=False, progress=progress)
        pbar.close()
        return {"evaluated_here": len(mine)}


@register_strategy
class RandomSearch(_OneShot):
    name = "random"
    summary = "architectures sampled within the constraint, each trained standalone on an equal share of the rows"

    def draw(self, i: int):
        """Candidate ``i``: the first of a seeded stream of draws that meets the constraint."""
        cfg = self.env.cfg
        for attempt in range(1000):
            g = self.space.sample(np.random.default_rng([cfg.seed, 29, i, attempt]))
            if cfg.speedup is None and cfg.latency_ms is None:
                return g
            if self.meets(self.latency(g)):
                return g
        raise NaskdError(f"1000 draws of the {self.space.name} space found no architecture meeting "
                         f"{P.constraint_text(cfg.speedup, cfg.latency_ms)}; relax the constraint")

    def rows_per_epoch(self) -> int:
        """Rows each candidate trains on per epoch: ``--candidate-rows`` (at most all of them), else an equal
        share of the rows spos trains its supernet on."""
        cfg = self.env.cfg
        if cfg.candidate_rows is not None:
            return min(cfg.candidate_rows, len(self.train_rows))
        return max(cfg.batch_size, len(self.train_rows) // cfg.candidates)

    def run(self) -> dict:
        self.setup()
        env, cfg = self.env, self.env.cfg
        rows = self.train_rows
        per_epoch = self.rows_per_epoch()
        path, log, kd_state = self.candidate_start()
        done = {r["index"]: r for r in log}
        dist.say(f"[search] random on {env.spec.name}: space {self.space.name} ({self.space.kind}); {cfg.candidates} "
                 f"candidates, each {cfg.epochs} epochs x {per_epoch} rows of the {len(rows)} training rows ("
                 f"{cfg.candidates * cfg.epochs * per_epoch:,} rows in all; a spos supernet of as many epochs trains "
                 f"{cfg.epochs * len(rows):,}); {len(self.selection)} selection rows carved from train; kd "
                 f"{cfg.kd}; lr {self.lr}; run directory {env.run_dir}", flush=True)
        summary = {"candidates": cfg.candidates, "rows_per_candidate_epoch": per_epoch}
        if cfg.storage:
            candidates, shared = self.shared_candidates(kd_state)
            return self.finish(candidates, {**summary, **shared,
                                            "train_seconds": round(sum(c["train_seconds"] for c in candidates), 1)})
        steps_here = 0
        seconds = 0.0
        candidates = []
        replicas = {"processes": dist.world_size()}      # and, under torchrun, whether every candidate's copies agreed
        for i in range(cfg.candidates):
            g = self.space.genotype_from_dict(dist.from_main(lambda i=i: self.draw(i).to_dict()), "the draw")
            if (i in done and done[i].get("epochs") == cfg.epochs
                    and _key(self.space.genotype_from_dict(done[i]["genotype"])) == _key(g)):
                candidates.append(done[i])
                seconds += done[i].get("train_seconds", 0.0)
                continue
            remaining = None if cfg.stop_after_steps is None else cfg.stop_after_steps - steps_here
            c, steps, agree = self.train_candidate(i, g, kd_state, stop_after_steps=remaining, log=path)
            steps_here += steps
            if c is None:
                return dist.from_main(lambda: self.stopped({"candidates_done": len(candidates), **agree}))
            candidates.append(c)
            seconds += c["train_seconds"]
            if dist.world_size() > 1:
                replicas["replicas_agree"] = replicas.get("replicas_agree", True) and agree["replicas_agree"]
        return dist.from_main(lambda: self.finish(candidates, {**summary, "train_seconds": round(seconds, 1),
                                                               **replicas}))

    def train_candidate(self, i: int, g, kd_state: dict, *, stop_after_steps=None, log=None, attempt=None):
        """Train candidate ``i`` (genotype ``g``) standalone in ``candidates/NNN`` of the run directory (resumed
        from its checkpoint when one is there: an interrupted run's) and score it on the selection split.
        Returns (its record, appended to ``log`` when given, or None when ``stop_after_steps`` stopped it; the
        steps taken here; what :meth:`processes` says of its replicas).

        ``attempt`` (a shared search's trial, ``trial-K``): each try of a candidate trains in a folder of its
        own, ``candidates/NNN/trial-K``, started from the newest checkpoint an earlier try of the candidate
        left (a killed or Ctrl-C'd one's, copied), so that a try Optuna failed as stale while its process was
        only paused never writes into the folder of the try that replaced it."""
        env, cfg = self.env, self.env.cfg
        data, device, kd, run_dir = env.data, env.device, env.kd, env.run_dir
        rows, per_epoch = self.train_rows, self.rows_per_epoch()
        base = run_dir / "candidates" / f"{i:03d}"
        cand_dir = base / attempt if attempt else base

        def prepare() -> bool:
            cand_dir.mkdir(parents=True, exist_ok=True)
            if attempt and not (cand_dir / "checkpoint.pt").is_file():
                earlier = [p / "checkpoint.pt" for p in base.iterdir() if p.is_dir() and p != cand_dir
                           and (p / "checkpoint.pt").is_file()]
                if earlier:
                    newest = max(earlier, key=lambda f: f.stat().st_mtime)
                    with atomic_path(cand_dir / "checkpoint.pt") as tmp:
                        shutil.copyfile(newest, tmp)
            return (cand_dir / "checkpoint.pt").is_file()

        resume = dist.from_main(prepare)
        student, opt = self.standalone(g, cfg.seed + i, kd_state)

        def batches_for_epoch(e):
            picked = rows[epoch_rows(len(rows), per_epoch, seed=cfg.seed, epoch=e * cfg.candidates + i)]
            return [picked[b] for b in bucket_batches(self.lengths[picked], cfg.batch_size, seed=cfg.seed, epoch=e)]

        total = len(batches_for_epoch(0)) * cfg.epochs
        sched = cosine_schedule(opt, total)

        def loss_fn(batch, progress):
            return kd(student(**batch), batch.get("teacher", {}), batch, progress)

        result = fit(model=student, optimizer=opt, scheduler=sched, epochs=cfg.epochs,
                     batches_for_epoch=batches_for_epoch, make_batch=lambda r: batch_to(data.make_batch(r), device),
                     loss_fn=loss_fn, evaluate=lambda: {"score": self.score(student)},
                     main_metric="score", run_dir=cand_dir, device=device,
                     resume=resume, stop_after_steps=stop_after_steps,
                     checkpoint_every=cfg.checkpoint_every, grad_clip=cfg.grad_clip, extra={"kd": kd},
                     desc=f"random candidate {i + 1}/{cfg.candidates}", log_every=cfg.log_every, shard="rows")
        agree = self.processes(student, kd)
        if result.stopped:
            return None, result.steps_here, agree

        def recorded():
            c = self.record(g, float(result.best_metrics["score"]), i, None)
            c.update(index=i, train_seconds=round(result.state.train_seconds, 1), steps=result.state.global_step,
                     best_epoch=result.state.best_epoch + 1, epochs=cfg.epochs)
            if log is not None:
                append_jsonl(log, c)
            # recorded: its weights are not needed again (nor an earlier try's)
            for d in [cand_dir] + ([p for p in base.iterdir() if p.is_dir()] if attempt else []):
                (d / "checkpoint.pt").unlink(missing_ok=True)
            return c

        return dist.from_main(recorded), result.steps_here, agree     # scored by rank 0 (the loop evaluates there)

    # candidate training shared through --storage ----------------------------------------------------------
    def shared_candidates(self, kd_state: dict) -> tuple[list[dict], dict]:
        """Every candidate drawn here and queued in the study as a fixed trial (its index a user attribute),
        then trained here and by the workers until each index has completed; the records read back in
        index order."""
        import optuna

        from ..shared import completed

        cfg = self.env.cfg
        study = self.start_shared(["maximize"], optuna.samplers.RandomSampler(seed=cfg.seed))
        queued = study.user_attrs.get("enqueued")
        if queued is None:
            for i in range(cfg.candidates):
                study.enqueue_trial(self.space.choices_of(self.draw(i)), user_attrs={"index": i})
            study.set_user_attr("enqueued", cfg.candidates)
        else:                           # resumed: a candidate every try of which failed is queued again
            from ..shared import lost_indices

            trials = study.get_trials(deepcopy=False)
            for i in sorted(lost_indices(trials, queued)):
                params = next(t.params for t in reversed(trials) if t.user_attrs.get("index") == i and t.params)
                study.enqueue_trial(params, user_attrs={"index": i})
        study.set_user_attr("finished", False)
        study.set_user_attr("ready", True)              # workers start training now
        self.evaluate_trials(study, kd_state)
        records = {}
        for c in completed(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))):
            records.setdefault(c["index"], c)
        study.set_user_attr("finished", True)
        candidates = [records[i] for i in range(cfg.candidates)]
        return candidates, self.shared_summary(study, candidates)

    def work(self, study) -> dict:
        """``naskd worker``: train the study's queued candidates until every one has completed."""
        import optuna

        self.setup()
        study.sampler = optuna.samplers.RandomSampler()        # proposes nothing: every trial is queued
        return self.evaluate_trials(study, criteria_state(self.env.kd))

    def evaluate_trials(self, study, kd_state: dict) -> dict:
        import optuna

        from ..shared import candidates_complete, evaluate_shared, worker_id

        cfg = self.env.cfg
        dims = self.space.dimensions()
        me, mine = worker_id(), []

        def objective(trial):
            if "index" not in trial.user_attrs:     # the queue emptied as this process asked: nothing to train
                raise optuna.TrialPruned()
            trial.set_user_attr("worker", me)
            i = int(trial.user_attrs["index"])
            g = self.space.from_choices({name: trial.suggest_categorical(name, list(opts))
                                         for name, opts in dims.items()})
            try:
                c, _, _ = self.train_candidate(i, g, kd_state, attempt=f"trial-{trial.number}")
            except KeyboardInterrupt:           # Ctrl-C: Optuna fails the trial; the candidate waits for another
                study.enqueue_trial(trial.params, user_attrs={"index": i})
                raise
            trial.set_user_attr("candidate", c)
            mine.append(c["index"])
            return c["score"]

        evaluate_shared(study, objective, candidates_complete(cfg.candidates, study.study_name), queued_only=True)
        return {"evaluated_here": len(mine)}
