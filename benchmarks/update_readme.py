"""Copy the measured tables of benchmarks/results/*.md into README.md between the results markers, in a
fixed order, so the README's results are always the files the benchmark scripts wrote.
Usage: python benchmarks/update_readme.py
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
ORDER = ["teachers", "bucketing", "ranking", "strategy_budget", "matched_speed", "pareto", "search_front", "lut_accuracy", "search_seeds", "search_overlap", "search_steps", "students_sst2", "seed_spread", "bench_sst2", "gpu_speed",
         "width_speed", "optimizer_step",
         "kd_study",
         "criteria_cost", "cache_size", "tagging_study", "structured_criteria", "structured_epochs", "augment_rates",
         "augment_study"]


def main() -> None:
    files = sorted(RESULTS.glob("*.md"))
    rank = {name: i for i, name in enumerate(ORDER)}
    files.sort(key=lambda p: (min((rank[k] for k in rank if p.stem.startswith(k)), default=len(ORDER)), p.stem))
    body = "\n".join("###" + f.read_text().strip()[2:] + "\n" if f.read_text().startswith("## ") else f.read_text()
                     for f in files) or "No measurement has been committed yet: run `bash benchmarks/run_all.sh`.\n"
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    (ROOT / "README.md").write_text(readme[:start] + "\n" + body + readme[end:])
    print(f"README.md: {len(files)} result tables")


if __name__ == "__main__":
    main()
