#!/usr/bin/env bash
# Every long measurement, resumable: finished runs are read, stopped ones resumed, so this script can be
# started again in a later session and picks up where it stopped. Two lanes run side by side, each on
# one thread (two processes on one thread each use this 2-core machine without the thread
# oversubscription that slows small-op models several-fold). Results land in benchmarks/results/.
# Each step is a study of benchmarks/studies/ (python benchmarks/run.py --list; --describe NAME shows one).
# Usage: bash benchmarks/run_all.sh   (from the repository root, after the install of README.md)
set -uo pipefail
cd "$(dirname "$0")/.."
export NASKD_DATA_DIR="${NASKD_DATA_DIR:-../shared/data}" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
py=.venv/bin/python
study() { $py benchmarks/run.py "$@"; }
mkdir -p runs/logs
# the SST-2 teacher first: both lanes need it
if ! grep -q '"status": "finished"' runs/sst2-teacher/metrics.json 2>/dev/null; then
  if [ -d runs/sst2-teacher ]; then resume=--resume; else resume=; fi
  OMP_NUM_THREADS=2 .venv/bin/naskd teacher --task sst2 $resume > runs/logs/sst2-teacher.log 2>&1
fi
(
  study bucketing > runs/logs/bench_bucketing.log 2>&1
  study teachers > runs/logs/glue_teachers.log 2>&1
  # waits for the seed-0 search of the other lane; a 10k-row, 4-epoch study fits one session
  study students_sst2_10000x4 > runs/logs/students_sst2.log 2>&1
) &
(
  study search_seeds > runs/logs/search_seeds.log 2>&1
  study search_steps > runs/logs/bench_search.log 2>&1
  study structured_criteria > runs/logs/bench_structured.log 2>&1
  study criteria_cost --threads 1 > runs/logs/bench_criteria.log 2>&1
  study augment_rates > runs/logs/bench_augment.log 2>&1
) &
wait
# issue 4's study: one searched genotype, five distillation settings, three seeds, in two lanes
study kd_study_10000x4 --set lane=0/2 > runs/logs/kd0.log 2>&1 &
study kd_study_10000x4 --set lane=1/2 > runs/logs/kd1.log 2>&1 &
wait
study kd_study_10000x4 --set report=true > runs/logs/kd_report.log 2>&1
# issue 6: the CoNLL teachers, then CRF students under four criteria (two lanes), then Table 2 alone
for task in conll2000 conll2003; do
  if ! grep -q '"status": "finished"' runs/$task-teacher/metrics.json 2>/dev/null; then
    if [ -d runs/$task-teacher ]; then resume=--resume; else resume=; fi
    OMP_NUM_THREADS=2 .venv/bin/naskd teacher --task $task $resume > runs/logs/$task-teacher.log 2>&1
  fi
done
study tagging_study --set lane=0/2 > runs/logs/tagging0.log 2>&1 &
study tagging_study --set lane=1/2 > runs/logs/tagging1.log 2>&1 &
wait
study tagging_study --set report=true > runs/logs/tagging_report.log 2>&1
study structured_epochs > runs/logs/bench_structured.log 2>&1
# issue 7: the whole split's labelling beside the subsample study
study augment_study_2000 --set full=true > runs/logs/augment_full.log 2>&1 &
study augment_study_2000 > runs/logs/augment_study.log 2>&1 &
wait
study augment_study_2000 --set report=true > runs/logs/augment_report.log 2>&1
# issue 5: every student on the full training split (two lanes), then the bench of them all, alone
study students_sst2_allx4 --set lane=0/2 > runs/logs/students_full0.log 2>&1 &
study students_sst2_allx4 --set lane=1/2 > runs/logs/students_full1.log 2>&1 &
wait
study students_sst2_allx4 --threads 2 > runs/logs/students_full.log 2>&1
# issue 5: every student on the full split plus its 776,672 teacher-labelled synthetic sentences (issue 7),
# logit MSE for all (the augment run's cache holds logits only), dev scored every 200,000 rows
s4=students_sst2_allx4of200k-aug-kd-logit_mse
study $s4 --set lane=0/2 > runs/logs/students_aug0.log 2>&1 &
study $s4 --set lane=1/2 > runs/logs/students_aug1.log 2>&1 &
wait
study $s4 --threads 2 > runs/logs/students_aug.log 2>&1
# issue 5 at 8 x 200,000 rows (the 4 x 200k curves were still rising), beside a search on 40,000 examples
s8=students_sst2_allx8of200k-aug-kd-logit_mse
(
  if ! grep -q '"status": "finished"' runs/sst2-search-40k/metrics.json 2>/dev/null; then
    if [ -d runs/sst2-search-40k ]; then resume=--resume; else resume=; fi
    .venv/bin/naskd search --task sst2 --layers 6 --max-train-examples 40000 --out runs/sst2-search-40k $resume \
      > runs/logs/search-40k.log 2>&1
  fi
  study ${s8}_sst2-search-40k --only searched > runs/logs/students_aug8_search40k.log 2>&1
  g0=runs/sst2-search-40k/genotype-max-identity0.json
  [ -f $g0 ] || .venv/bin/naskd derive runs/sst2-search-40k --max-identity 0 -o $g0
  study ${s8}_sst2-search-40k_genotype-max-identity0 --only searched > runs/logs/students_aug8_search40k_maxid0.log 2>&1
  study ${s8}-w96_sst2-search-40k --only searched > runs/logs/students_aug8_search40k_w96.log 2>&1
  study $s8 --set lane=1/2 > runs/logs/students_aug8_1.log 2>&1
) &
study $s8 --set lane=0/2 > runs/logs/students_aug8_0.log 2>&1 &
wait
study $s8 --threads 2 > runs/logs/students_aug8.log 2>&1
for s in ${s8}_sst2-search-40k ${s8}-w96_sst2-search-40k ${s8}_sst2-search-40k_genotype-max-identity0; do
  study $s >> runs/logs/students_aug8.log 2>&1
done
# how far one retraining moves the searched student: seeds 1 and 2 beside seed 0 (one lane each)
study ${s8}_s1 --only searched > runs/logs/students_aug8_s1.log 2>&1 &
study ${s8}_s2 --only searched > runs/logs/students_aug8_s2.log 2>&1 &
wait
for s in 1 2; do study ${s8}_s$s >> runs/logs/students_aug8.log 2>&1; done
study seed_spread_sst2_$s8 > runs/logs/seed_spread.log 2>&1
study width_speed_sst2 > runs/logs/width_speed.log 2>&1
study optimizer_step > runs/logs/bench_optimizer.log 2>&1
# issue 5 at 16 x 200,000 rows (the linear decay stretched over twice the rows): the searched student with
# two seeds, then every baseline at the same budget (two lanes; about 2 h 15 min per genotype student)
s16=students_sst2_allx16of200k-aug-kd-logit_mse
study $s16 --only searched > runs/logs/students_e16_s0.log 2>&1 &
study $s16 --set train_seed=1 --only searched > runs/logs/students_e16_s1.log 2>&1 &
wait
study $s16 --set lane=0/2 > runs/logs/students_e16_0.log 2>&1 &
study $s16 --set lane=1/2 > runs/logs/students_e16_1.log 2>&1 &
wait
study $s16 > runs/logs/students_e16.log 2>&1
study seed_spread_sst2_$s16 > runs/logs/seed_spread_e16.log 2>&1
# issue 21: the strategies at equal budget and the searched students against the baselines at matched speed
# (two lanes), then the front of every finished student benched together, alone
study strategy_budget_sst2_macro > runs/logs/strategy_budget.log 2>&1 &
study matched_speed_sst2 > runs/logs/matched_speed.log 2>&1 &
wait
study pareto_sst2 > runs/logs/pareto.log 2>&1
# speed on a GPU, where there is one (the teacher with random weights: speed does not depend on them)
if $py -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  study gpu_speed_sst2 > runs/logs/gpu_speed.log 2>&1
fi
$py benchmarks/update_readme.py
