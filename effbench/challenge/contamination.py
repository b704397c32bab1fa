"""`effbench contamination`: which eval items of a suite occur in a submission's training data.

The NeurIPS 2023 LLM efficiency challenge found that winners overfit the open tasks; organisers
need to check a submission's training data against the items it is evaluated on. This module
does it with word n-gram overlap, as GPT-3 (13-grams) and PaLM / Llama 2 (overlap fractions) did.

Eval side (small: ~2000 items). The eval instances of each run of the suite, exactly those
`effbench run` evaluates with the same options (effbench.challenge.helm_bridge.suite_eval_instances: HELM
steps 1-2, no model; HELM works in a temporary folder where --data-dir's datasets are linked).
With --data-dir, a run whose data files are missing is listed as not checked, with the files.
An item found in several runs (BIG-bench's 0-3 shot runs) is indexed once, reported per run.
An item's n-grams come from:
  - its input text (the question, the passage, the rules: what HELM puts in the prompt);
  - each correct reference of at least n words (a reference summary, a long answer), as a
    separate segment: an n-gram never spans input and answer. Shorter references (a choice, a
    number, "True") are not scored: a 1-3 word answer occurs everywhere. Instead, for a flagged
    item the report says whether a correct answer also occurs in the matching training example
    (`answer_in_example`; a hint only: short answers can occur there by chance).

Normalisation, both sides alike: lowercase (str.lower), words = runs of Unicode alphanumerics
(`[^\\W_]+`: "don't" -> don, t; "snake_case" -> snake, case); everything else (punctuation,
symbols, whitespace, line breaks) only separates words. So reformatting (option letters, spaces,
quotes, markdown) does not hide a copy. Consequences: an item with no word at all (a Dyck bracket
string) cannot be checked: it is counted as `unscored`; items that differ only in symbols
(synthetic_reasoning's "+ = X" vs "= + X") normalise to the same words, and so match the same
training text.

N-grams: every window of n consecutive words (default 13, GPT-3's choice: long enough that a match
is not chance in natural text). A segment shorter than n words (many MMLU questions are 6-12
words) is used whole, as one n-gram: the item counts as present when its whole word sequence
occurs in a training example. Duplicate n-grams of an item count once.

Score: the fraction of an item's distinct n-grams found anywhere in the training data. Flagged
when >= threshold, default 0.2. Why 0.2 and not GPT-3's "any 13-gram": a long item (a CNN/DM
article) shares one 13-gram with unrelated text by quotation; one copy of an item, even edited in
a place or two, keeps well over 20% of its n-grams (one changed word in a 40-word question leaves
15 of 28), and a short item scores 0 or 1. The "touched" count (>= 1 n-gram found) is GPT-3's
criterion, reported next to it.

Training side: streamed, never loaded whole. By extension:
  - .jsonl / .ndjson: one JSON value a line; its text = all its string values (nested objects and
    lists included, keys not), joined by a line break; `field` = only that top-level key. Blank
    lines are skipped; a line that is not JSON is an error naming the file and line.
  - .csv / .tsv: one row an example, all cells; a header row is detected (csv.Sniffer) and then
    not scanned; `field` = only that column (needs a header). Reported line: where the row starts.
  - .txt: plain text. Each line is scanned; n-grams run across single line breaks (an item wrapped
    over lines is still found) but not across blank lines, so both "one example per line" and
    "examples separated by blank lines" work. Reported line: where the matching n-gram starts.
Files are read as UTF-8 (invalid bytes replaced). NUL and \\x01 characters count as spaces.

Matching: the eval n-grams go into a dict keyed by a 64-bit hash (Python's str hash of each word,
combined as a polynomial mod 2^64) plus, per n-gram length, a bitmap prefilter (>= 1024 bits an
n-gram: < 0.1% of windows pass by chance). Training text is processed in batches of ~1 MB: one
tokenising pass over the whole batch (the regex; for ASCII text str.translate + split, 3x faster,
same words), one str hash per word, then numpy computes the window hashes of every length needed
(n, and the lengths of short items) and keeps the windows whose hash is in the bitmap and that
stay inside one example; only those few go back to Python, where the words are compared exactly
(a hash collision never flags anything). Memory:
one batch plus the eval side, whatever the file size. For every eval n-gram the scan keeps the
first training line holding it, the word position there and the number of occurrences; an item's
reported training line is the one holding most of its found n-grams. Speed, one CPU core,
60-word examples: ~70k examples/s against 2000 items (bench/test_contamination_speed.py), ~65k
against neurips2023-open's 4209 (12 n-gram lengths).
A batch is flushed at an example boundary, or inside a .txt paragraph once it reaches 8 MB: only
n-grams across that one line break are missed.
"""

from __future__ import annotations

import csv
import json
import re
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from itertools import groupby
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from effbench.atomic import write_json_atomic
from effbench.contracts import EffbenchError

DEFAULT_N = 13
DEFAULT_THRESHOLD = 0.2
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".txt": "txt"}

WORD = re.compile(r"[^\W_]+")
_HARD, _SOFT = "\x00", "\x01"  # batch separators: between examples / between lines of a paragraph
_TOKEN = re.compile(r"[^\W_]+|[\x00\x01]")
# ASCII text: the same words as _TOKEN, 3x faster: every other character -> space, then split().
_ASCII_SPACES = str.maketrans({chr(i): " " for i in range(128) if not chr(i).isalnum() and chr(i) not in (_HARD, _SOFT)})
_P = np.uint64(0x100000001B3)  # odd multiplier of the polynomial window hash
_BATCH_CHARS = 1 << 20  # flush at the next example boundary after this many characters
_MAX_BATCH_CHARS = 1 << 23  # flush anyway (a .txt paragraph this long is cut)
_KEEP_TEXT = 1 << 16  # characters kept of a training example that matched, for the report
_KEEP_TOTAL = 1 << 26


def words(text: str) -> list[str]:
    """The normalised words of `text`: lowercase, runs of Unicode alphanumerics."""
    return WORD.findall(text.lower())


def ngrams(ws: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Distinct n-grams of a word list, in order; shorter than n words: the whole list; none: []."""
    if not ws:
        return []
    if len(ws) <= n:
        return [tuple(ws)]
    return list(dict.fromkeys(tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)))


def _word_hashes(ws: Sequence[str]) -> np.ndarray:
    return np.fromiter(map(hash, ws), dtype=np.int64, count=len(ws)).view(np.uint64)


def _windows(wh: np.ndarray, k: int) -> np.ndarray:
    """Hashes of every k-word window of the word hashes `wh`: sum w_(i+j) * P^(k-1-j) mod 2^64
    (numpy's uint64 arithmetic wraps), the same values the training scan computes."""
    h = wh.copy()
    for j in range(1, k):
        h = h[:-1]
        h *= _P
        h += wh[j:]
    return h


_HARD_SEP, _SOFT_SEP = f" {_HARD} ", f" {_SOFT} "
_HARD_H = int(_word_hashes([_HARD])[0])
_SOFT_H = int(_word_hashes([_SOFT])[0])


# --- eval side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalItem:
    run: str
    id: str
    split: str
    text: str  # the input text
    answers: tuple[str, ...]  # texts of the correct references


def eval_items(run: str, instances: Iterable) -> list[EvalItem]:
    """HELM Instances (duck-typed: .id, .split, .input.text, .references[*].output.text/.tags)."""
    out = []
    for k, inst in enumerate(instances):
        answers = tuple(r.output.text for r in inst.references if "correct" in (r.tags or ()))
        out.append(EvalItem(run, inst.id or f"#{k}", inst.split or "", inst.input.text or "", answers))
    return out


def item_segments(item: EvalItem, n: int) -> list[list[str]]:
    """The word lists whose n-grams score `item`: its input, and correct answers of >= n words."""
    segs = [words(item.text)]
    for a in item.answers:
        aw = words(a)
        if len(aw) >= n:
            segs.append(aw)
    return [s for s in segs if s]


class GramIndex:
    """The eval items' n-grams, and what the training scan found of each."""

    def __init__(self, items: Sequence[EvalItem], n: int):
        self.n = n
        self.items = list(items)
        self.grams: list[tuple[str, ...]] = []
        self.item_grams: list[list[int]] = []
        self.item_words: list[int] = []
        ids: dict[tuple[str, ...], int] = {}
        self.by_hash: dict[int, list[int]] = {}
        hashes: dict[int, list[int]] = {}  # n-gram length -> hashes
        seen: dict[tuple[str, tuple[str, ...]], int] = {}  # the same item in several runs (BIG-bench's 0-3 shots)
        for item in self.items:
            same = seen.setdefault((item.text, item.answers), len(self.item_grams))
            if same != len(self.item_grams):
                self.item_words.append(self.item_words[same])
                self.item_grams.append(self.item_grams[same])
                continue
            segs = item_segments(item, n)
            self.item_words.append(sum(map(len, segs)))
            gids = []
            for seg in segs:
                k = min(n, len(seg))
                hs = _windows(_word_hashes(seg), k).tolist()  # the scan's hashes, one numpy pass
                for i, h in enumerate(hs):
                    g = tuple(seg[i : i + k])
                    gid = ids.get(g)
                    if gid is None:
                        gid = ids[g] = len(self.grams)
                        self.grams.append(g)
                        self.by_hash.setdefault(h, []).append(gid)
                        hashes.setdefault(k, []).append(h)
                    gids.append(gid)
            self.item_grams.append(list(dict.fromkeys(gids)))
        self.lengths = sorted(hashes)
        # per length a bitmap of >= 1024 bits per n-gram (< 0.1% of windows pass by chance), so
        # the few short items' lengths get small, cache-friendly tables
        self.bitmaps: dict[int, tuple[np.uint64, np.ndarray]] = {}
        for k, hk in hashes.items():
            bits = 1 << max(16, min(26, (1024 * len(hk)).bit_length()))
            mask = np.uint64(bits - 1)
            bitmap = np.zeros(bits, dtype=bool)
            bitmap[np.array(hk, dtype=np.uint64) & mask] = True
            self.bitmaps[k] = (mask, bitmap)
        # scan results, per n-gram
        self.first_line = [-1] * len(self.grams)
        self.first_word = [0] * len(self.grams)
        self.hits = [0] * len(self.grams)
        self.texts: dict[int, str] = {}  # training line -> its text (capped), for lines that matched
        self._kept = 0
        self.examples = 0
        self.words_scanned = 0

    # --- training scan -----------------------------------------------------------------------

    def scan(self, records: Iterable[tuple[int, str, bool]]) -> None:
        """Scan training records (line number, text, continues the previous record's paragraph)."""
        buf: list[str] = []
        lines: list[int] = []
        size = 0
        fresh = True
        for line_no, text, cont in records:
            self.examples += 1
            if size >= _BATCH_CHARS and (not cont or size >= _MAX_BATCH_CHARS):
                self._flush(buf, lines)
                buf, lines, size, fresh = [], [], 0, True
            if not text:
                continue
            buf.append((_SOFT_SEP if cont and not fresh else _HARD_SEP) + text)
            lines.append(line_no)
            size += len(text)
            fresh = False
        if buf:
            self._flush(buf, lines)

    def _flush(self, buf: list[str], lines: list[int]) -> None:
        if not self.grams:
            return
        batch = "".join(buf)
        if batch.count(_HARD) + batch.count(_SOFT) != len(buf):  # separators inside a text: spaces
            buf[:] = [s[:3] + s[3:].replace(_HARD, " ").replace(_SOFT, " ") for s in buf]
            batch = "".join(buf)
        if batch.isascii():
            toks = batch.lower().translate(_ASCII_SPACES).split()
        else:
            toks = []
            for ascii_only, group in groupby(buf, key=str.isascii):
                text = "".join(group).lower()
                toks += text.translate(_ASCII_SPACES).split() if ascii_only else _TOKEN.findall(text)
        hs = _word_hashes(toks)
        is_hard = hs == np.uint64(_HARD_H)
        is_soft = hs == np.uint64(_SOFT_H)
        is_sep = is_hard | is_soft
        sep_pos = np.flatnonzero(is_sep)
        self.words_scanned += len(toks) - len(sep_pos)
        if is_soft.any():
            kidx = np.flatnonzero(~is_soft)
            wc = hs[kidx]
        else:
            kidx = None
            wc = hs
        bounds = np.append(np.flatnonzero(wc == np.uint64(_HARD_H)), len(wc))
        h = wc.copy()
        k = 1
        for target in self.lengths:
            while k < target:
                if len(h) <= 1:
                    return
                h = h[:-1]
                h *= _P
                h += wc[k:]
                k += 1
            mask, bitmap = self.bitmaps[k]
            cand = np.flatnonzero(bitmap[h & mask])
            if not len(cand):
                continue
            cand = cand[bounds[np.searchsorted(bounds, cand)] - cand >= k]  # inside one example
            for c in cand.tolist():
                gids = self.by_hash.get(int(h[c]))
                if gids is None:
                    continue
                pos = kidx[c : c + k].tolist() if kidx is not None else range(c, c + k)
                window = tuple(toks[p] for p in pos)
                for gid in gids:
                    if self.grams[gid] != window:
                        continue
                    self.hits[gid] += 1
                    if self.first_line[gid] < 0:
                        o = pos[0]
                        seg = int(np.searchsorted(sep_pos, o, side="right")) - 1
                        line = lines[seg]
                        self.first_line[gid] = line
                        self.first_word[gid] = o - int(sep_pos[seg]) - 1
                        if line not in self.texts and self._kept < _KEEP_TOTAL:
                            text = buf[seg][3 : 3 + _KEEP_TEXT]
                            self.texts[line] = text
                            self._kept += len(text)


# --- training file readers ---------------------------------------------------------------------


def training_format(path: Path, field_name: str | None = None) -> str:
    """The reader for `path`, or a one-line EffbenchError (missing, a folder, unknown extension)."""
    if not path.exists():
        raise EffbenchError(f"{path}: training file does not exist (argument TRAIN_FILE)")
    if not path.is_file():
        raise EffbenchError(f"{path}: not a file (argument TRAIN_FILE)")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EffbenchError(f"{path}: unsupported extension {path.suffix or '(none)'!r}; use one of {', '.join(FORMATS)} (argument TRAIN_FILE)")
    if field_name is not None and fmt == "txt":
        raise EffbenchError(f"{path}: --field applies to .jsonl and .csv files, not .txt")
    return fmt


def _strings(v, out: list[str]) -> None:
    if isinstance(v, str):
        out.append(v)
    elif isinstance(v, dict):
        for x in v.values():
            _strings(x, out)
    elif isinstance(v, list):
        for x in v:
            _strings(x, out)


def _text_of(obj) -> str:
    if type(obj) is dict:
        vals = [v for v in obj.values() if type(v) is str]
        if len(vals) == len(obj):
            return "\n".join(vals)
    out: list[str] = []
    _strings(obj, out)
    return "\n".join(out)


def read_jsonl(path: Path, field_name: str | None = None) -> Iterator[tuple[int, str, bool]]:
    loads = json.loads
    with path.open(encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, 1):
            try:
                obj = loads(line)
            except json.JSONDecodeError as e:
                if not line.strip():
                    continue
                raise EffbenchError(f"{path}: line {line_no}: not valid JSON ({e.msg}, column {e.colno})") from None
            if field_name is not None:
                if not isinstance(obj, dict) or field_name not in obj:
                    raise EffbenchError(f"{path}: line {line_no}: no field {field_name!r} (option --field)")
                obj = obj[field_name]
            yield line_no, _text_of(obj), False


def read_csv(path: Path, field_name: str | None = None, delimiter: str = ",") -> Iterator[tuple[int, str, bool]]:
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        sample = f.read(1 << 16)
        f.seek(0)
        try:
            header = bool(sample.strip()) and csv.Sniffer().has_header(sample)
        except csv.Error:
            header = False
        reader = csv.reader(f, delimiter=delimiter)
        column = None
        start = 1
        try:
            if header:
                names = next(reader, [])
                start = reader.line_num + 1
                if field_name is not None:
                    if field_name not in names:
                        raise EffbenchError(f"{path}: line 1: no column {field_name!r} in the header {names} (option --field)")
                    column = names.index(field_name)
            elif field_name is not None:
                raise EffbenchError(f"{path}: line 1: no header row, so no column {field_name!r} (option --field)")
            for row in reader:
                if not row:  # a blank line
                    start = reader.line_num + 1
                    continue
                if column is not None:
                    text = row[column] if column < len(row) else ""
                else:
                    text = "\n".join(c for c in row if c)
                yield start, text, False
                start = reader.line_num + 1
        except csv.Error as e:
            raise EffbenchError(f"{path}: line {reader.line_num}: not valid CSV ({e})") from None


def read_txt(path: Path) -> Iterator[tuple[int, str, bool]]:
    with path.open(encoding="utf-8", errors="replace") as f:
        cont = False
        for line_no, line in enumerate(f, 1):
            if line.isspace() or not line:
                cont = False
                continue
            yield line_no, line, cont
            cont = True


def read_training(path: Path, field_name: str | None = None) -> Iterator[tuple[int, str, bool]]:
    """Stream (line number, text, continues the previous paragraph) records of a training file."""
    fmt = training_format(path, field_name)
    if fmt == "jsonl":
        return read_jsonl(path, field_name)
    if fmt in ("csv", "tsv"):
        return read_csv(path, field_name, "\t" if fmt == "tsv" else ",")
    return read_txt(path)


# --- report ------------------------------------------------------------------------------------


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
    from effbench.challenge.helm_bridge import suite_eval_instances

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
