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
from .oneshot import _key, _OneShot, _read_jsonl

DEFAULT_CANDIDATE_ROWS = 20_000
STUDY = "naskd-hyperband"        # fixed: Hyperband assigns brackets from a hash of the study name and trial number


@register_strategy
class Hyperband(_OneShot):
    name = "hyperband"
    summary = ("multi-fidelity multi-trial: Optuna TPE proposes architectures within the constraint, each trained "
               "standalone, Hyperband pruning on the selection score stops the poor ones early")

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
        path, recorded, kd_state = self.candidate_start()
        dist.say(f"[search] hyperband on {env.spec.name}: space {self.space.name} ({self.space.kind}); TPE proposals "
                 f"within {P.constraint_text(cfg.speedup, cfg.latency_ms)}, each candidate up to {cfg.epochs} x "
                 f"{per_pass} rows in {n_rungs} rungs of {cfg.rung_rows}, Hyperband pruning (reduction 3); budget "
                 f"{budget:,} rows or {cfg.trials} proposals; {len(self.selection)} selection rows carved from train; "
                 f"kd {cfg.kd}; lr {self.lr}; run directory {run_dir}", flush=True)
        # the study, the proposals, the pruning and the records are rank 0's under torchrun (the latency model is
        # there); every rank trains each candidate that is proposed (its batches split by rows)
        book = {"candidates": [], "pruned": [], "trained": 0, "seconds": 0.0, "seen": {}, "replay": list(recorded),
                "trial": None, "values": None}
        steps_here = 0
        replicas = {"processes": dist.world_size()}      # and, under torchrun, whether every candidate's copies agreed

        def propose(t: int):
            """Rank 0: the next proposal, told at once when it needs no training (infeasible, a repeat, a trial of
            the interrupted run): None then, else (genotype dict, whether its candidate directory holds a
            checkpoint, the selection scores of its rungs so far)."""
            trial = study.ask()
            g = self.space.from_choices({n: trial.suggest_categorical(n, list(o)) for n, o in dims.items()})
            replay, seen = book["replay"], book["seen"]
            rec = replay.pop(0) if replay else None
            if rec is not None and _key(self.space.genotype_from_dict(rec["genotype"])) != _key(g):
                book["replay"], rec = [], None     # the proposals changed (another version): the rest is trained again
            lat = rec["latency"] if rec is not None else self.latency(g)
            if native:
                trial.set_constraint("latency", self.violation(lat))
            else:
                trial.set_user_attr("constraint", [self.violation(lat)])
            if not self.meets(lat):           # told without training: the sampler learns the constraint
                if rec is None:
                    append_jsonl(path, {"trial": t, "genotype": g.to_dict(), "state": "infeasible", "latency": lat})
                study.tell(trial, 0.0)
                return None
            if rec is None and _key(g) in seen:   # proposed again: told what it got, not trained twice
                rec = {**seen[_key(g)], "trial": t, "rows": 0, "train_seconds": 0.0}
                append_jsonl(path, rec)
            if rec is not None:               # a finished trial of the interrupted run, or a repeat: the same answer
                for k, v in enumerate(rec["values"]):
                    trial.report(v, k + 1)
                book["trained"] += rec["rows"]
                book["seconds"] += rec.get("train_seconds", 0.0)
                first = _key(g) not in seen
                seen.setdefault(_key(g), rec)
                if rec["state"] == "pruned":
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    if first:
                        book["pruned"].append(rec)
                else:
                    study.tell(trial, rec["score"])
                    if first:
                        book["candidates"].append(rec["candidate"])
                return None
            cand_dir = run_dir / "candidates" / f"{t:03d}"
            cand_dir.mkdir(parents=True, exist_ok=True)
            resume = (cand_dir / "checkpoint.pt").is_file()
            values: list[float] = []
            # a resumed candidate's rungs before the interruption are reported first
            for line in _read_jsonl(cand_dir / "log.jsonl") if resume else []:
                if "eval" in line:
                    values.append(float(line["eval"]["score"]))
                    trial.report(values[-1], len(values))
            book.update(trial=trial, values=values, lat=lat)
            return g.to_dict(), resume

        def on_epoch(e, metrics):
            """Rank 0, after rung e: report it; True (the training ends on every rank) when Hyperband prunes."""
            values, trial = book["values"], book["trial"]
            if len(values) <= e:
                values.append(float(metrics["score"]))
                trial.report(values[-1], e + 1)
            return e + 1 < n_rungs and trial.should_prune()

        for t in range(cfg.trials):
            if dist.from_main(lambda: book["trained"]) >= budget:
                break
            proposal = dist.from_main(lambda t=t: propose(t))
            if proposal is None:
                continue
            g, resume = self.space.genotype_from_dict(proposal[0], "the proposal"), proposal[1]
            cand_dir = run_dir / "candidates" / f"{t:03d}"
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

            def loss_fn(batch, progress, student=student):
                return kd(student(**batch), batch.get("teacher", {}), batch, progress)

            remaining = None if cfg.stop_after_steps is None else cfg.stop_after_steps - steps_here
            t0 = time.time()
            result = fit(model=student, optimizer=opt, scheduler=sched, epochs=n_rungs,
                         batches_for_epoch=batches_for_epoch,
                         make_batch=lambda r: batch_to(data.make_batch(r), device), loss_fn=loss_fn,
                         evaluate=lambda student=student: {"score": self.score(student)}, main_metric="score",
                         run_dir=cand_dir, device=device, resume=resume, stop_after_steps=remaining,
                         checkpoint_every=cfg.checkpoint_every, grad_clip=cfg.grad_clip, extra={"kd": kd},
                         on_epoch=on_epoch, desc=f"hyperband trial {t + 1}", log_every=cfg.log_every, shard="rows")
            steps_here += result.steps_here
            agree = self.processes(student, kd)
            if dist.world_size() > 1:
                replicas["replicas_agree"] = replicas.get("replicas_agree", True) and agree["replicas_agree"]
            if result.stopped:
                return dist.from_main(lambda: self.stopped({"trials_done": len(book["candidates"]) + len(book["pruned"]),
                                                            "rows_trained": book["trained"]}))

            def conclude(t=t, g=g, result=result, t0=t0, cand_dir=cand_dir, batches_for_epoch=batches_for_epoch):
                """Rank 0: the trial told (pruned or its best score) and recorded."""
                values, trial = book["values"], book["trial"]
                state = "pruned" if result.ended_early else "complete"
                rows_done = sum(len(r) for e in range(len(values)) for r in batches_for_epoch(e))
                secs = round(time.time() - t0, 1)        # this process's share (a resumed candidate: since then)
                book["trained"] += rows_done
                book["seconds"] += secs
                rec = {"trial": t, "genotype": g.to_dict(), "text": self.space.describe(g), "state": state,
                       "values": values, "rows": rows_done, "train_seconds": secs, "latency": book["lat"]}
                if state == "pruned":
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    book["pruned"].append(rec)
                else:
                    score = float(result.best_metrics["score"])
                    c = self.record(g, score, t, None)
                    c.update(train_seconds=secs, rows=rows_done, best_epoch=result.state.best_epoch + 1)
                    rec.update(score=score, candidate=c)
                    study.tell(trial, score)
                    book["candidates"].append(c)
                book["seen"][_key(g)] = rec
                append_jsonl(path, rec)
                (cand_dir / "checkpoint.pt").unlink(missing_ok=True)     # recorded: its weights are not needed again

            dist.from_main(conclude)

        def finished():
            candidates, pruned = book["candidates"], book["pruned"]
            if not candidates:
                raise NaskdError(f"hyperband finished no candidate within {budget:,} rows ({len(pruned)} pruned); "
                                 "raise --budget-rows or lower --candidate-rows")
            return self.finish(candidates, {"trials": len(study.trials), "completed": len(candidates),
                                            "pruned": len(pruned), "rows_trained": book["trained"],
                                            "budget_rows": budget, "rung_rows": cfg.rung_rows,
                                            "rungs_per_candidate": n_rungs, "rows_per_candidate_pass": per_pass,
                                            "train_seconds": round(book["seconds"], 1),
                                            "sampler": f"optuna TPESampler(seed={cfg.seed})",
                                            "pruner": f"optuna HyperbandPruner(1, {n_rungs}, 3)", **replicas})

        return dist.from_main(finished)
