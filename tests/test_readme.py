"""README.md stays a short page whose every repository path exists, and whose test command is CI's.

A path is anything README names in an inline code span, a fenced code block or a link target that looks like
a relative path (it has a "/" or ends in a file suffix). Not repository paths, and so skipped on purpose:
URLs (database URLs too) and anchors, run directories (`runs/...`, made by the commands), the virtual environment (`.venv/...`),
anything outside the repository (`~/...`, `../...`, `/abs/...`) and placeholders (a metavariable of PLACEHOLDERS
such as RUN_DIR, FILE or G in `G.json`; a `<name>` part is matched as a wildcard instead). A glob must match something.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 150
SUFFIXES = (".md", ".py", ".json", ".jsonl", ".yaml", ".yml", ".toml", ".ipynb", ".sh", ".txt", ".png", ".cfg")
NOT_REPO = ("runs/", ".venv/", "~", "../", "/", "http://", "https://", "sqlite:", "postgresql:", "#", "mailto:")
# metavariables of the commands' synopses: a path with one of these as a part (or a file stem) is a placeholder
PLACEHOLDERS = {"RUN_DIR", "RUN", "DIR", "FILE", "PATH", "NAME", "NAME_OR_PATH", "G", "T", "STUDENT", "OUT", "HOST"}


def _tokens(text: str) -> list[str]:
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    rest = re.sub(r"```[^\n]*\n.*?```", "", text, flags=re.S)
    spans = re.findall(r"`([^`]+)`", rest) + fenced   # inline code may wrap a line
    words = [w for span in spans for w in span.split()]
    words += re.findall(r"\]\(([^)\s]+)\)", rest)
    out = []
    for w in words:
        w = w.strip("'\"(),;:")
        w = re.sub(r"^[A-Z_]+=", "", w)              # NASKD_DATA_DIR=../shared/data
        w = w.split("#", 1)[0] if not w.startswith("#") else w
        if w.startswith("-") or "=" in w:
            continue
        if "/" in w or w.endswith(SUFFIXES):
            out.append(w)
    return out


def repository_paths(text: str) -> list[str]:
    """The README's names that must exist in the repository (see the module docstring for what is not)."""
    paths = []
    for w in _tokens(text):
        parts = w.split("/")
        if w.startswith(NOT_REPO) or any(p in PLACEHOLDERS or p.split(".")[0] in PLACEHOLDERS for p in parts):
            continue
        paths.append(w)
    return paths


def _exists(path: str) -> bool:
    pattern = re.sub(r"<[^>/]+>", "*", path).rstrip("/")
    if any(c in pattern for c in "*?["):
        return any(ROOT.glob(pattern))
    return (ROOT / pattern).exists()


def test_every_path_readme_names_exists():
    paths = repository_paths(README.read_text())
    assert len(paths) >= 10, paths                  # the extraction still finds README's links and files
    missing = sorted({p for p in paths if not _exists(p)})
    assert not missing, f"README.md names paths that are not in the repository: {missing}"


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n < MAX_LINES, f"README.md has {n} lines; keep it under {MAX_LINES} (details go to docs/)"


def test_readme_gives_cis_test_command():
    """.ci/run runs README's test command: the pytest line of .ci/run is one of README's bash lines."""
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if "-m pytest" in line]
    assert len(ci) == 1, ci
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert ci[0].strip() in [line.strip() for b in blocks for line in b.splitlines()]


def test_the_path_rules():
    text = ("`benchmarks/results/<name>.md` `runs/sst2-search/genotype.json` `~/.cache/naskd` `RUN_DIR/x.json`\n"
            "[a](https://example.org/x.md) `--out\nruns/x` [n](NOTES.md) `../shared/data` `G.json` [b](docs/usage.md#x)\n"
            "```bash\nNASKD_DATA_DIR=../shared/data .venv/bin/naskd search\n```\n")
    assert repository_paths(text) == ["benchmarks/results/<name>.md", "NOTES.md", "docs/usage.md"]
    assert _exists("benchmarks/results/<name>.md") and not _exists("benchmarks/no-such-file.md")


def test_results_file_has_every_table():
    """benchmarks/RESULTS.md is generated from benchmarks/results/*.md; regenerate it when a table changes."""
    results = (ROOT / "benchmarks/RESULTS.md").read_text()
    stale = []
    for f in sorted((ROOT / "benchmarks/results").glob("*.md")):
        title, _, body = f.read_text().strip().partition("\n")
        if title not in results or body.strip() not in results:
            stale.append(f.name)
    assert not stale, f"benchmarks/RESULTS.md is out of date for {stale}: run `python benchmarks/update_readme.py`"
