"""``--strategy hyperband``: multi-fidelity multi-trial search.

The fallback issue 21 names for a supernet that does not rank (benchmarks/results/ranking_sst2_macro.md: on
SST-2's macro space the spos supernet's inherited score ranks 30 standalone-trained architectures at Kendall
tau -0.08, the parameter count at 0.32). Every candidate is trained standalone, as ``random`` does, but the
candidates are proposed by Optuna's TPE sampler (Bergstra et al. 2011) from the ones trained before, within
the latency constraint (``Trial.set_constraint``; an architecture that misses it is told so without being
trained), and each one's selection-split score is reported every ``--rung-rows`` rows to Optuna's
Hyperband pruner (Li et al. 2018), which stops the unpromising ones early. The search ends when
``--budget-rows`` rows have been trained over all candidates or ``--trials`` have been proposed.

A candidate trains at most ``--epochs`` passes over ``--candidate-rows`` rows (default 20,000) of the training
rows (the selection split carved out), with one cosine schedule over that whole length, so a pruned
candidate has followed the same schedule as a finished one up to where it stopped. Completed candidates make
the front and the pick; pruned ones are recorded in ``candidates.jsonl`` with the scores they reached.

Resume: every finished trial (completed, pruned or infeasible) is in ``candidates.jsonl``; a resumed run
replays them into a new study (the sampler is seeded and proposes the same architectures again, checked one
by one) and continues the interrupted candidate from its checkpoint.
"""
from __future__ import annotations

import time

from ...data.encode import bucket_batches, epoch_rows
from ...errors import NaskdError
from ...pipeline import batch_to
from ...train import cosine_schedule, fit
from ...utils import dist
from ...utils.io import append_jsonl
from .. import pareto as P
from . import register_strategy
from .oneshot import _key, _OneShot, _read_jsonl, candidate_log, criteria_state

DEFAULT_CANDIDATE_ROWS = 20_000
STUDY = "naskd-hyperband"        # fixed: Hyperband assigns brackets from a hash of the study name and trial number


class _Pruned(Exception):
    pass


@register_strategy
class Hyperband(_OneShot):
    name = "hyperband"
    summary = ("multi-fidelity multi-trial: Optuna TPE proposes architectures within the constraint, each trained "
               "standalone, Hyperband pruning on the selection score stops the poor ones early")

    @classmethod
    def check(cls, cfg, space_kind: str) -> None:
        super().check(cfg, space_kind)
        from ...errors import ConfigError
        from ...utils import dist

        if dist.launched():
            raise ConfigError("--strategy hyperband runs in one process (Hyperband decides between rungs whether a "
                              "trial goes on); run it without torchrun, or use torchrun with --strategy spos, "
                              "random, gdas or darts")

    def rungs(self) -> tuple[int, int]:
        """(rows per candidate pass, rungs per candidate): a rung is ``--rung-rows`` rows (the last one of a
        pass may be shorter), evaluated on the selection split after each."""
        cfg = self.env.cfg
        per_pass = min(cfg.candidate_rows or DEFAULT_CANDIDATE_ROWS, len(self.train_rows))
        per_pass_rungs = -(-per_pass // cfg.rung_rows)
        return per_pass, per_pass_rungs * cfg.epochs

    def budget(self) -> int:
        cfg = self.env.cfg
        return cfg.budget_rows if cfg.budget_rows is not None else 3 * cfg.epochs * len(self.train_rows)

    def run(self) -> dict:
        import optuna

        self.setup()
        env, cfg = self.env, self.env.cfg
        data, device, kd, run_dir = env.data, env.device, env.kd, env.run_dir
        rows = self.train_rows
        per_pass, n_rungs = self.rungs()
        per_pass_rungs = n_rungs // cfg.epochs
        budget = self.budget()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # the constraint (<= 0 when met) rides on each trial: Trial.set_constraint since Optuna 5, before that
        # the sampler's constraints_func reading it back (as spos does)
        native = hasattr(optuna.trial.Trial, "set_constraint")
        kw = {} if native else {"constraints_func": lambda ft: ft.user_attrs["constraint"]}
        study = optuna.create_study(
            study_name=STUDY, direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=min(10, cfg.trials), **kw),
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=n_rungs, reduction_factor=3))
        dims = self.space.dimensions()
        path, recorded = candidate_log(env)
        kd_state = criteria_state(kd)
        dist.say(f"[search] hyperband on {env.spec.name}: space {self.space.name} ({self.space.kind}); TPE proposals "
                 f"within {P.constraint_text(cfg.speedup, cfg.latency_ms)}, each candidate up to {cfg.epochs} x "
                 f"{per_pass} rows in {n_rungs} rungs of {cfg.rung_rows}, Hyperband pruning (reduction 3); budget "
                 f"{budget:,} rows or {cfg.trials} proposals; {len(self.selection)} selection rows carved from train; "
                 f"kd {cfg.kd}; lr {self.lr}; run directory {run_dir}", flush=True)
        candidates, pruned, trained, seconds, steps_here = [], [], 0, 0.0, 0
        seen: dict = {}                   # architecture -> its record, for proposals that repeat one
        replay = list(recorded)
        for t in range(cfg.trials):
            if trained >= budget:
                break
            trial = study.ask()
            g = self.space.from_choices({n: trial.suggest_categorical(n, list(o)) for n, o in dims.items()})
            rec = replay.pop(0) if replay else None
            if rec is not None and _key(self.space.genotype_from_dict(rec["genotype"])) != _key(g):
                replay, rec = [], None        # the proposals changed (another version): the rest is trained again
            lat = rec["latency"] if rec is not None else self.latency(g)
            if native:
                trial.set_constraint("latency", self.violation(lat))
            else:
                trial.set_user_attr("constraint", [self.violation(lat)])
            if not self.meets(lat):           # told without training: the sampler learns the constraint
                if rec is None:
                    append_jsonl(path, {"trial": t, "genotype": g.to_dict(), "state": "infeasible", "latency": lat})
                study.tell(trial, 0.0)
                continue
            if rec is None and _key(g) in seen:   # proposed again: told what it got, not trained twice
                rec = {**seen[_key(g)], "trial": t, "rows": 0, "train_seconds": 0.0}
                append_jsonl(path, rec)
            if rec is not None:               # a finished trial of the interrupted run, or a repeat: the same answer
                for k, v in enumerate(rec["values"]):
                    trial.report(v, k + 1)
                trained += rec["rows"]
                seconds += rec.get("train_seconds", 0.0)
                first = _key(g) not in seen
                seen.setdefault(_key(g), rec)
                if rec["state"] == "pruned":
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    if first:
                        pruned.append(rec)
                else:
                    study.tell(trial, rec["score"])
                    if first:
                        candidates.append(rec["candidate"])
                continue
            cand_dir = run_dir / "candidates" / f"{t:03d}"
            cand_dir.mkdir(parents=True, exist_ok=True)
            student, opt = self.standalone(g, cfg.seed + t, kd_state)

            def batches_for_epoch(e, t=t):
                # rung e: the (e mod rungs-per-pass)-th slice of pass e // rungs-per-pass
                p, r = divmod(e, per_pass_rungs)
                picked = rows[epoch_rows(len(rows), per_pass, seed=cfg.seed, epoch=p * 100_003 + t)]
                picked = picked[r * cfg.rung_rows:(r + 1) * cfg.rung_rows]
                return [picked[b] for b in bucket_batches(self.lengths[picked], cfg.batch_size, seed=cfg.seed,
                                                          epoch=e)]

            total = sum(len(batches_for_epoch(e)) for e in range(n_rungs))
            sched = cosine_schedule(opt, total)
            values: list[float] = []
            # a resumed candidate's rungs before the interruption are reported first
            for line in _read_jsonl(cand_dir / "log.jsonl") if (cand_dir / "checkpoint.pt").is_file() else []:
                if "eval" in line:
                    values.append(float(line["eval"]["score"]))
                    trial.report(values[-1], len(values))

            def on_epoch(e, metrics, trial=trial, values=values):
                if len(values) <= e:
                    values.append(float(metrics["score"]))
                    trial.report(values[-1], e + 1)
                if e + 1 < n_rungs and trial.should_prune():
                    raise _Pruned()

            def loss_fn(batch, progress, student=student):
                return kd(student(**batch), batch.get("teacher", {}), batch, progress)

            remaining = None if cfg.stop_after_steps is None else cfg.stop_after_steps - steps_here
            t0 = time.time()
            try:
                result = fit(model=student, optimizer=opt, scheduler=sched, epochs=n_rungs,
                             batches_for_epoch=batches_for_epoch,
                             make_batch=lambda r: batch_to(data.make_batch(r), device), loss_fn=loss_fn,
                             evaluate=lambda student=student: {"score": self.score(student)}, main_metric="score",
                             run_dir=cand_dir, device=device, resume=(cand_dir / "checkpoint.pt").is_file(),
                             stop_after_steps=remaining, checkpoint_every=cfg.checkpoint_every,
                             grad_clip=cfg.grad_clip, extra={"kd": kd}, on_epoch=on_epoch,
                             desc=f"hyperband trial {t + 1}", log_every=cfg.log_every)
                state = "complete"
            except _Pruned:
                result, state = None, "pruned"
            if result is not None:
                steps_here += result.steps_here
                if result.stopped:
                    return self.stopped({"trials_done": len(candidates) + len(pruned), "rows_trained": trained})
            rows_done = sum(len(r) for e in range(len(values)) for r in batches_for_epoch(e))
            secs = round(time.time() - t0, 1)        # this process's share (a resumed candidate: since then)
            trained += rows_done
            seconds += secs
            rec = {"trial": t, "genotype": g.to_dict(), "text": self.space.describe(g), "state": state,
                   "values": values, "rows": rows_done, "train_seconds": secs, "latency": lat}
            if state == "pruned":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned.append(rec)
            else:
                score = float(result.best_metrics["score"])
                c = self.record(g, score, t, None)
                c.update(train_seconds=secs, rows=rows_done, best_epoch=result.state.best_epoch + 1)
                rec.update(score=score, candidate=c)
                study.tell(trial, score)
                candidates.append(c)
            seen[_key(g)] = rec
            append_jsonl(path, rec)
            (cand_dir / "checkpoint.pt").unlink(missing_ok=True)     # recorded: its weights are not needed again
        if not candidates:
            raise NaskdError(f"hyperband finished no candidate within {budget:,} rows ({len(pruned)} pruned); raise "
                             "--budget-rows or lower --candidate-rows")
        return self.finish(candidates, {"trials": len(study.trials), "completed": len(candidates),
                                        "pruned": len(pruned), "rows_trained": trained, "budget_rows": budget,
                                        "rung_rows": cfg.rung_rows, "rungs_per_candidate": n_rungs,
                                        "rows_per_candidate_pass": per_pass, "train_seconds": round(seconds, 1),
                                        "sampler": f"optuna TPESampler(seed={cfg.seed})",
                                        "pruner": f"optuna HyperbandPruner(1, {n_rungs}, 3)"})
