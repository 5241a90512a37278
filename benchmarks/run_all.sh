#!/usr/bin/env bash
# Every long measurement, resumable: finished runs are read, stopped ones resumed, so this script can be
# started again in a later session and picks up where it stopped. Two lanes run side by side, each on
# one thread (two processes on one thread each use this 2-core machine without the thread
# oversubscription that slows small-op models several-fold). Results land in benchmarks/results/.
# Usage: bash benchmarks/run_all.sh   (from the repository root, after the install of README.md)
set -uo pipefail
cd "$(dirname "$0")/.."
export NASKD_DATA_DIR="${NASKD_DATA_DIR:-../shared/data}" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
py=.venv/bin/python
mkdir -p runs/logs
# the SST-2 teacher first: both lanes need it
if ! grep -q '"status": "finished"' runs/sst2-teacher/metrics.json 2>/dev/null; then
  if [ -d runs/sst2-teacher ]; then resume=--resume; else resume=; fi
  OMP_NUM_THREADS=2 .venv/bin/naskd teacher --task sst2 $resume > runs/logs/sst2-teacher.log 2>&1
fi
(
  $py benchmarks/bench_bucketing.py > runs/logs/bench_bucketing.log 2>&1
  $py benchmarks/glue_teachers.py > runs/logs/glue_teachers.log 2>&1
  # waits for the seed-0 search of the other lane; a 10k-row, 4-epoch study fits one session
  $py benchmarks/students_sst2.py --max-train-examples 10000 --epochs 4 --bench > runs/logs/students_sst2.log 2>&1
) &
(
  $py benchmarks/search_seeds.py --order2 > runs/logs/search_seeds.log 2>&1
  $py benchmarks/bench_search.py > runs/logs/bench_search.log 2>&1
  $py benchmarks/bench_structured.py --criteria-only > runs/logs/bench_structured.log 2>&1
  $py benchmarks/bench_criteria.py > runs/logs/bench_criteria.log 2>&1
  $py benchmarks/bench_augment.py > runs/logs/bench_augment.log 2>&1
) &
wait
# issue 4's study: one searched genotype, five distillation settings, three seeds, in two lanes
$py benchmarks/kd_study.py --lane 0/2 > runs/logs/kd0.log 2>&1 &
$py benchmarks/kd_study.py --lane 1/2 > runs/logs/kd1.log 2>&1 &
wait
$py benchmarks/kd_study.py --report > runs/logs/kd_report.log 2>&1
# issue 6: the CoNLL teachers, then CRF students under four criteria (two lanes), then Table 2 alone
for task in conll2000 conll2003; do
  if ! grep -q '"status": "finished"' runs/$task-teacher/metrics.json 2>/dev/null; then
    if [ -d runs/$task-teacher ]; then resume=--resume; else resume=; fi
    OMP_NUM_THREADS=2 .venv/bin/naskd teacher --task $task $resume > runs/logs/$task-teacher.log 2>&1
  fi
done
$py benchmarks/tagging_study.py --lane 0/2 > runs/logs/tagging0.log 2>&1 &
$py benchmarks/tagging_study.py --lane 1/2 > runs/logs/tagging1.log 2>&1 &
wait
$py benchmarks/tagging_study.py --report > runs/logs/tagging_report.log 2>&1
OMP_NUM_THREADS=2 $py benchmarks/bench_structured.py --teacher runs/conll2000-teacher > runs/logs/bench_structured.log 2>&1
# issue 7: the whole split's labelling beside the subsample study
$py benchmarks/augment_study.py --full > runs/logs/augment_full.log 2>&1 &
$py benchmarks/augment_study.py > runs/logs/augment_study.log 2>&1 &
wait
$py benchmarks/augment_study.py --report > runs/logs/augment_report.log 2>&1
# issue 5: every student on the full training split (two lanes), then the bench of them all, alone
$py benchmarks/students_sst2.py --max-train-examples 0 --epochs 4 --lane 0/2 > runs/logs/students_full0.log 2>&1 &
$py benchmarks/students_sst2.py --max-train-examples 0 --epochs 4 --lane 1/2 > runs/logs/students_full1.log 2>&1 &
wait
OMP_NUM_THREADS=2 $py benchmarks/students_sst2.py --max-train-examples 0 --epochs 4 --bench > runs/logs/students_full.log 2>&1
# issue 5: every student on the full split plus its 776,672 teacher-labelled synthetic sentences (issue 7),
# logit MSE for all (the augment run's cache holds logits only), dev scored every 200,000 rows
aug="--max-train-examples 0 --epochs 4 --epoch-examples 200000 --augmented runs/sst2-augment --kd logit_mse"
$py benchmarks/students_sst2.py $aug --lane 0/2 > runs/logs/students_aug0.log 2>&1 &
$py benchmarks/students_sst2.py $aug --lane 1/2 > runs/logs/students_aug1.log 2>&1 &
wait
OMP_NUM_THREADS=2 $py benchmarks/students_sst2.py $aug --bench > runs/logs/students_aug.log 2>&1
# issue 5 at 8 x 200,000 rows (the 4 x 200k curves were still rising), beside a search on 40,000 examples
aug8="--max-train-examples 0 --epochs 8 --epoch-examples 200000 --augmented runs/sst2-augment --kd logit_mse"
(
  if ! grep -q '"status": "finished"' runs/sst2-search-40k/metrics.json 2>/dev/null; then
    if [ -d runs/sst2-search-40k ]; then resume=--resume; else resume=; fi
    .venv/bin/naskd search --task sst2 --layers 6 --max-train-examples 40000 --out runs/sst2-search-40k $resume \
      > runs/logs/search-40k.log 2>&1
  fi
  $py benchmarks/students_sst2.py $aug8 --search runs/sst2-search-40k --only searched > runs/logs/students_aug8_search40k.log 2>&1
  g0=runs/sst2-search-40k/genotype-max-identity0.json
  [ -f $g0 ] || .venv/bin/naskd derive runs/sst2-search-40k --max-identity 0 -o $g0
  $py benchmarks/students_sst2.py $aug8 --search runs/sst2-search-40k --genotype $g0 --only searched \
    > runs/logs/students_aug8_search40k_maxid0.log 2>&1
  $py benchmarks/students_sst2.py $aug8 --search runs/sst2-search-40k --width 96 --only searched \
    > runs/logs/students_aug8_search40k_w96.log 2>&1
  $py benchmarks/students_sst2.py $aug8 --lane 1/2 > runs/logs/students_aug8_1.log 2>&1
) &
$py benchmarks/students_sst2.py $aug8 --lane 0/2 > runs/logs/students_aug8_0.log 2>&1 &
wait
OMP_NUM_THREADS=2 $py benchmarks/students_sst2.py $aug8 --finished-only --bench --bench-also \
  runs/sst2-students/searched-sst2-search-40k-genotype-max-identity0-allx8of200k-aug-kd-logit_mse/student \
  > runs/logs/students_aug8.log 2>&1
for s in "--search runs/sst2-search-40k" "--search runs/sst2-search-40k --width 96" \
         "--search runs/sst2-search-40k --genotype runs/sst2-search-40k/genotype-max-identity0.json"; do
  $py benchmarks/students_sst2.py $aug8 $s --finished-only >> runs/logs/students_aug8.log 2>&1
done
# how far one retraining moves the searched student: seeds 1 and 2 beside seed 0 (one lane each)
$py benchmarks/students_sst2.py $aug8 --train-seed 1 --only searched > runs/logs/students_aug8_s1.log 2>&1 &
$py benchmarks/students_sst2.py $aug8 --train-seed 2 --only searched > runs/logs/students_aug8_s2.log 2>&1 &
wait
for s in 1 2; do $py benchmarks/students_sst2.py $aug8 --train-seed $s --finished-only >> runs/logs/students_aug8.log 2>&1; done
$py benchmarks/seed_spread.py --tag allx8of200k-aug-kd-logit_mse --seeds 0,1,2 > runs/logs/seed_spread.log 2>&1
OMP_NUM_THREADS=2 $py benchmarks/width_speed.py > runs/logs/width_speed.log 2>&1
$py benchmarks/bench_optimizer.py > runs/logs/bench_optimizer.log 2>&1
# issue 5 at 16 x 200,000 rows (the linear decay stretched over twice the rows): the searched student with
# two seeds, then every baseline at the same budget (two lanes; about 2 h 15 min per genotype student)
aug16="--max-train-examples 0 --epochs 16 --epoch-examples 200000 --augmented runs/sst2-augment --kd logit_mse"
$py benchmarks/students_sst2.py $aug16 --only searched > runs/logs/students_e16_s0.log 2>&1 &
$py benchmarks/students_sst2.py $aug16 --train-seed 1 --only searched > runs/logs/students_e16_s1.log 2>&1 &
wait
$py benchmarks/students_sst2.py $aug16 --lane 0/2 > runs/logs/students_e16_0.log 2>&1 &
$py benchmarks/students_sst2.py $aug16 --lane 1/2 > runs/logs/students_e16_1.log 2>&1 &
wait
$py benchmarks/students_sst2.py $aug16 --finished-only > runs/logs/students_e16.log 2>&1
$py benchmarks/seed_spread.py --tag allx16of200k-aug-kd-logit_mse --seeds 0,1 > runs/logs/seed_spread_e16.log 2>&1
# speed on a GPU, where there is one (the teacher with random weights: speed does not depend on them)
if $py -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  $py benchmarks/gpu_speed.py --teacher runs/sst2-teacher \
    --model runs/sst2-students/searched-allx16of200k-aug-kd-logit_mse/student \
    --out benchmarks/results/gpu_speed_sst2.json > runs/logs/gpu_speed.log 2>&1
fi
$py benchmarks/update_readme.py
