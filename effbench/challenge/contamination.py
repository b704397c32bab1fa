"""`effbench contamination`: which eval items of a suite occur in a submission's training data.

The NeurIPS 2023 LLM efficiency challenge found that winners overfit the open tasks; organisers
need to check a submission's training data against the items it is evaluated on. This module
does it with word n-gram overlap, as GPT-3 (13-grams) and PaLM / Llama 2 (overlap fractions) did.
Here: the check and its report; contamination_ngrams.py: words, n-grams and the training scan;
contamination_files.py: the training file formats.

Eval side (small: ~2000 items). The eval instances of each run of the suite, exactly those
`effbench run` evaluates with the same options (effbench.challenge.helm_eval_runs.suite_eval_instances:
HELM steps 1-2, no model; HELM works in a temporary folder where --data-dir's datasets are linked).
With --data-dir, a run whose data files are missing is listed as not checked, with the files.
An item found in several runs (BIG-bench's 0-3 shot runs) is indexed once, reported per run.
Correct answers too short to be scored (a choice, a number): for a flagged item the report says
whether one also occurs in the matching training example (`answer_in_example`; a hint only:
short answers can occur there by chance).

Score: the fraction of an item's distinct n-grams found anywhere in the training data. Flagged
when >= threshold, default 0.2. Why 0.2 and not GPT-3's "any 13-gram": a long item (a CNN/DM
article) shares one 13-gram with unrelated text by quotation; one copy of an item, even edited in
a place or two, keeps well over 20% of its n-grams (one changed word in a 40-word question leaves
15 of 28), and a short item scores 0 or 1. The "touched" count (>= 1 n-gram found) is GPT-3's
criterion, reported next to it. An item's reported training line is the one holding most of its
found n-grams.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

from effbench.atomic import write_json_atomic
from effbench.challenge.contamination_files import read_training, training_format
from effbench.challenge.contamination_ngrams import WORD, EvalItem, GramIndex, eval_items, words
from effbench.contracts import EffbenchError

DEFAULT_N = 13
DEFAULT_THRESHOLD = 0.2


@dataclass
class ItemOverlap:
    run: str
    id: str
    split: str
    overlap: float  # fraction of the item's distinct n-grams found in the training data
    grams: int
    grams_found: int
    words: int
    flagged: bool
    text: str  # excerpt of the item's input
    train_line: int | None  # the training line holding most of its found n-grams
    train_excerpt: str
    answer_in_example: bool | None  # a correct answer also occurs in that training example


@dataclass
class RunContamination:
    run: str
    scenario: str
    items: int
    unscored: int  # items without any word (nothing to match)
    touched: int  # items with at least one n-gram found (GPT-3's criterion)
    flagged: int  # items with overlap >= threshold
    max_overlap: float
    overlaps: list[ItemOverlap] = field(default_factory=list)  # every touched item, worst first
    missing: str | None = None  # not checked: its data files are missing (--data-dir)


@dataclass
class ContaminationReport:
    """What `effbench contamination` found: per run, the eval items found in the training file."""

    train_file: str
    format: str
    field: str | None
    n: int
    threshold: float
    examples: int  # training records scanned (jsonl objects, csv rows, txt lines)
    words: int
    eval_items: int
    eval_grams: int
    seconds: float
    runs: list[RunContamination]
    suite: str | None = None

    @property
    def examples_per_s(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0

    @property
    def flagged(self) -> int:
        return sum(r.flagged for r in self.runs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["examples_per_s"] = round(self.examples_per_s, 1)
        d["flagged_total"] = self.flagged
        return d


def _excerpt(text: str, start: int = 0, before: int = 30, length: int = 150) -> str:
    a = max(0, start - before)
    s = " ".join(text[a : start + length].split())
    return ("…" if a > 0 else "") + s + ("…" if start + length < len(text) else "")


def _char_offset(text: str, word_index: int) -> int:
    for i, m in enumerate(WORD.finditer(text)):
        if i == word_index:
            return m.start()
    return 0


def _contains(haystack: list[str], needle: list[str]) -> bool:
    return bool(needle) and f" {' '.join(needle)} " in f" {' '.join(haystack)} "


def score(index: GramIndex, runs: Sequence[tuple[str, str]], threshold: float) -> list[RunContamination]:
    """Per run (name, scenario), in order: counts and every touched item, worst first."""
    by_run: dict[str, RunContamination] = {name: RunContamination(name, scen, 0, 0, 0, 0, 0.0) for name, scen in runs}
    for item, gids, nwords in zip(index.items, index.item_grams, index.item_words):
        rc = by_run[item.run]
        rc.items += 1
        if not gids:
            rc.unscored += 1
            continue
        found = [g for g in gids if index.first_line[g] >= 0]
        if not found:
            continue
        frac = len(found) / len(gids)
        flagged = frac >= threshold
        rc.touched += 1
        rc.flagged += flagged
        rc.max_overlap = max(rc.max_overlap, frac)
        counts = Counter(index.first_line[g] for g in found)
        line = min(counts, key=lambda ln: (-counts[ln], ln))
        text = index.texts.get(line)
        excerpt, in_example = "(not kept)", None
        if text is not None:
            w0 = min(index.first_word[g] for g in found if index.first_line[g] == line)
            excerpt = _excerpt(text, _char_offset(text, w0))
            if item.answers:
                tw = words(text)
                in_example = any(_contains(tw, words(a)) for a in item.answers)
        rc.overlaps.append(
            ItemOverlap(item.run, item.id, item.split, round(frac, 4), len(gids), len(found), nwords, flagged,
                        _excerpt(item.text, 0, 0, 150), line, excerpt, in_example)
        )
    for rc in by_run.values():
        rc.overlaps.sort(key=lambda o: (-o.overlap, o.id))
    return list(by_run.values())


def check_options(n: int, threshold: float) -> None:
    if n < 1:
        raise EffbenchError(f"--n: must be at least 1, not {n}")
    if not 0 < threshold <= 1:
        raise EffbenchError(f"--threshold: must be in (0, 1], not {threshold}")


def check(train_file: Path, runs: Sequence, n: int = DEFAULT_N, threshold: float = DEFAULT_THRESHOLD,
          field_name: str | None = None) -> ContaminationReport:
    """Check `train_file` against eval runs: (run name, scenario name, HELM instances) each."""
    check_options(n, threshold)
    fmt = training_format(train_file, field_name)
    items: list[EvalItem] = []
    names = []
    missing = {}
    for r in runs:
        run, scenario, instances = r
        names.append((run, scenario))
        items += eval_items(run, instances)
        if getattr(r, "missing", None):
            missing[run] = r.missing
    t0 = time.perf_counter()
    index = GramIndex(items, n)
    index.scan(read_training(train_file, field_name))
    seconds = time.perf_counter() - t0
    scored = score(index, names, threshold)
    for rc in scored:
        rc.missing = missing.get(rc.run)
    return ContaminationReport(
        train_file=str(train_file), format=fmt, field=field_name, n=n, threshold=threshold,
        examples=index.examples, words=index.words_scanned, eval_items=len(items), eval_grams=len(index.grams),
        seconds=round(seconds, 4), runs=[r for r in scored if not r.missing] + [r for r in scored if r.missing],
    )


def check_suite(train_file: Path, suite: str, data_dir: Path | None = None, max_eval_instances: int | None = None,
                run_filter: str | None = None, n: int = DEFAULT_N, threshold: float = DEFAULT_THRESHOLD,
                field_name: str | None = None) -> ContaminationReport:
    """`effbench contamination`: the suite's eval items (no model) against `train_file`. Options
    and the training file are checked before HELM builds anything. HELM works in a temporary
    folder (local datasets from `data_dir` are linked there, as `effbench run` does)."""
    from effbench.challenge.suites import load_suite

    check_options(n, threshold)
    training_format(train_file, field_name)
    suite_obj = load_suite(suite)
    if data_dir is not None and not data_dir.is_dir():
        raise EffbenchError(f"--data-dir: {data_dir} is not a folder")
    from effbench.challenge.helm_eval_runs import suite_eval_instances

    with tempfile.TemporaryDirectory(prefix="effbench-contamination-") as tmp:
        helm_dir = Path(tmp) / "helm"
        helm_dir.mkdir()
        if data_dir is not None:
            from effbench.challenge.data import stage

            stage(data_dir, helm_dir)
        runs = suite_eval_instances(suite_obj, helm_dir, max_eval_instances, run_filter, offline=data_dir is not None)
        # the temporary folder goes away: name missing files by their path inside HELM's folder
        runs = [replace(r, missing=r.missing.replace(f"{helm_dir}/", "")) if getattr(r, "missing", None) else r for r in runs]
    report = check(train_file, runs, n, threshold, field_name)
    report.suite = suite_obj.name
    return report


def print_report(report: ContaminationReport, console, examples: int = 3) -> None:
    """A rich table per run, then up to `examples` flagged items per run."""
    from rich.markup import escape
    from rich.table import Table

    table = Table("run", "scenario", "items", "no words", "touched", "flagged", "max overlap",
                  title=f"eval items in {escape(report.train_file)} ({report.n}-grams, flagged at overlap >= {report.threshold:g})")
    for r in report.runs:
        if r.missing:
            table.add_row(escape(r.run), escape(r.scenario), "-", "-", "-", "-", "-", style="dim")
            continue
        style = "bold red" if r.flagged else None
        table.add_row(escape(r.run), escape(r.scenario), str(r.items), str(r.unscored), str(r.touched),
                      str(r.flagged), f"{r.max_overlap:.2f}", style=style)
    console.print(table)
    for r in report.runs:
        if r.missing:
            console.print(f"[yellow]not checked:[/] {escape(r.missing)}", highlight=False)
    first_with: dict[tuple, str] = {}  # flagged items -> the first run listing them
    for r in report.runs:
        flagged = [o for o in r.overlaps if o.flagged]
        if not flagged:
            continue
        same = first_with.setdefault(tuple((o.id, o.text, o.overlap) for o in flagged), r.run)
        if same != r.run:  # BIG-bench's 0-3 shot runs share their items
            console.print(f"[bold]{escape(r.run)}[/]: {r.flagged} flagged, the same as {escape(same)}")
            continue
        shown = flagged[:examples]
        console.print(f"[bold]{escape(r.run)}[/]: {r.flagged} flagged" + (f", showing {len(shown)}" if r.flagged > len(shown) else ""))
        for o in shown:
            ans = {True: "; answer in it too", False: "; answer not in it", None: ""}[o.answer_in_example]
            console.print(f"  {escape(o.id)} ({o.split}) overlap {o.overlap:.2f} ({o.grams_found}/{o.grams} n-grams, {o.words} words)")
            console.print(f"    item:  {escape(o.text)}", highlight=False)
            console.print(f"    train line {o.train_line}{ans}: {escape(o.train_excerpt)}", highlight=False)


def write_json(report: ContaminationReport, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, report.to_dict(), ensure_ascii=False)
    except OSError as e:
        raise EffbenchError(f"{path}: cannot write the JSON report ({e.strerror}) (option --json)") from None
