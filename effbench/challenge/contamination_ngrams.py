"""The n-gram side of `effbench contamination` (contamination.py): an eval item's words and
n-grams, and GramIndex, which scans training text for them. Both sides are normalised alike.

Normalisation: lowercase (str.lower), words = runs of Unicode alphanumerics (`[^\\W_]+`:
"don't" -> don, t; "snake_case" -> snake, case); everything else (punctuation, symbols,
whitespace, line breaks) only separates words. So reformatting (option letters, spaces, quotes,
markdown) does not hide a copy. Consequences: an item with no word at all (a Dyck bracket string)
cannot be checked: it is counted as `unscored`; items that differ only in symbols
(synthetic_reasoning's "+ = X" vs "= + X") normalise to the same words, and so match the same
training text.

An item's n-grams come from its input text (the question, the passage, the rules: what HELM puts
in the prompt) and from each correct reference of at least n words (a reference summary, a long
answer), as a separate segment: an n-gram never spans input and answer. Shorter references (a
choice, a number, "True") are not scored: a 1-3 word answer occurs everywhere. N-grams: every
window of n consecutive words (default 13, GPT-3's choice: long enough that a match is not chance
in natural text). A segment shorter than n words (many MMLU questions are 6-12 words) is used
whole, as one n-gram: the item counts as present when its whole word sequence occurs in a
training example. Duplicate n-grams of an item count once. An item found in several runs
(BIG-bench's 0-3 shot runs) is indexed once.

Matching: the eval n-grams go into a dict keyed by a 64-bit hash (Python's str hash of each word,
combined as a polynomial mod 2^64) plus, per n-gram length, a bitmap prefilter (>= 1024 bits an
n-gram: < 0.1% of windows pass by chance). Training text is processed in batches of ~1 MB: one
tokenising pass over the whole batch (the regex; for ASCII text str.translate + split, which
gives the same words faster), one str hash per word, then numpy computes the window hashes of
every length needed (n, and the lengths of short items) and keeps the windows whose hash is in
the bitmap and that stay inside one example; only those few go back to Python, where the words
are compared exactly (a hash collision never flags anything). Memory: one batch plus the eval
side, whatever the file size. For every eval n-gram the scan keeps the first training line
holding it, the word position there and the number of occurrences. A batch is flushed at an
example boundary, or inside a .txt paragraph once it reaches 8 MB: only n-grams across that one
line break are missed. NUL and \\x01 characters in training text count as spaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import groupby
from typing import Iterable, Sequence

import numpy as np

WORD = re.compile(r"[^\W_]+")
_HARD, _SOFT = "\x00", "\x01"  # batch separators: between examples / between lines of a paragraph
_TOKEN = re.compile(r"[^\W_]+|[\x00\x01]")
# ASCII text: the same words as _TOKEN, faster: every other character -> space, then split().
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
