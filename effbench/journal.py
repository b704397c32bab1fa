"""The journal: every finished result appended to OUT/journal.jsonl as its batch lands.

A `kill -9` loses at most the batch in flight (each batch is one flushed write; the page cache
survives a killed process, so no fsync per batch: it would cost throughput to guard against power
loss, which is not the failure this is for). `--resume` reads it back; a torn last line, the
mark of a kill mid-write, is dropped with a warning. The header pins the plan: resuming against
a different plan (other suite, submission or options) is refused, not silently merged.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import IO, Iterable

from effbench.contracts import Completion, EffbenchError, GenerationRequest, GenerationResult, Timings, TokenLogprob

JOURNAL_NAME = "journal.jsonl"
JOURNAL_VERSION = 1


def plan_digest(requests: Iterable[GenerationRequest]) -> str:
    """A hash of what will be asked (ids and prompts and parameters), to match a journal to a plan."""
    h = hashlib.sha256()
    for r in requests:
        h.update(json.dumps([r.id, r.prompt, r.max_tokens, list(r.stop_sequences), r.temperature, r.num_completions,
                             r.top_k_per_token, r.echo_prompt], ensure_ascii=False).encode())
    return h.hexdigest()[:24]


def result_to_json(r: GenerationResult) -> dict:
    return asdict(r)


def result_from_json(d: dict) -> GenerationResult:
    completions = tuple(
        Completion(
            text=c["text"],
            tokens=tuple(
                TokenLogprob(t["text"], t["logprob"], tuple((a, b) for a, b in t["top_logprobs"]), t["token_id"])
                for t in c["tokens"]
            ),
            finish_reason=c["finish_reason"],
        )
        for c in d["completions"]
    )
    return GenerationResult(
        request_id=d["request_id"],
        completions=completions,
        prompt_tokens=d["prompt_tokens"],
        output_tokens=d["output_tokens"],
        timings=Timings(**d["timings"]),
        batch_id=d["batch_id"],
        batch_size=d["batch_size"],
        computed_tokens=d["computed_tokens"],
        cached_tokens=d.get("cached_tokens", 0),  # absent in journals written before prefix reuse
        error=d["error"],
    )


class Journal:
    """Append-only; one JSON line per result, one write + flush per batch."""

    def __init__(self, path: Path, header: dict, append: bool = False):
        self.path = path
        self._f: IO[str] = path.open("a" if append else "w", encoding="utf-8")
        if not append:
            self._write([{"kind": "header", "version": JOURNAL_VERSION, **header}])

    def _write(self, records: list[dict]) -> None:
        self._f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._f.flush()

    def append(self, results: list[GenerationResult]) -> None:
        self._write([{"kind": "result", **result_to_json(r)} for r in results])

    def mark(self, kind: str, **fields) -> None:
        """An event line (start of execution, deadline reached, worker restarted)."""
        self._write([{"kind": kind, **fields}])

    def close(self) -> None:
        self._f.close()


def read_journal(path: Path) -> tuple[dict, list[GenerationResult], list[dict]]:
    """(header, results, events). A torn or corrupt LAST line is dropped with a warning (a kill
    mid-write); a corrupt line anywhere else means the file was damaged otherwise: refused."""
    if not path.is_file():
        raise EffbenchError(f"{path}: no journal to resume from (option --resume)")
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    header: dict | None = None
    results: list[GenerationResult] = []
    events: list[dict] = []
    for i, line in enumerate(lines, start=1):
        try:
            rec = json.loads(line)
            kind = rec.pop("kind")
            if kind == "header":
                header = rec
            elif kind == "result":
                results.append(result_from_json(rec))
            else:
                events.append({"kind": kind, **rec})
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            if i == len(lines):
                warnings.warn(f"{path}:{i}: torn last journal line dropped ({type(e).__name__}); its batch will run again")
                _truncate_last_line(path, len(lines) - 1)
                break
            raise EffbenchError(f"{path}:{i}: corrupt journal line ({type(e).__name__}: {e})") from None
    if header is None:
        raise EffbenchError(f"{path}:1: journal has no header line")
    return header, results, events


def _truncate_last_line(path: Path, keep_lines: int) -> None:
    """Cut the torn line off so that appends start on a fresh line."""
    data = path.read_bytes()
    pos = 0
    for _ in range(keep_lines):
        pos = data.index(b"\n", pos) + 1
    with path.open("r+b") as f:
        f.truncate(pos)


def budget_timeline(results: list[GenerationResult], events: list[dict]) -> tuple[dict[str, float], float]:
    """(request id -> budget seconds used when its result landed, total budget seconds used).
    The budget clock runs from each execution's start (a resumed run has several) to its last
    result; time between a kill and the resume is not counted."""
    starts = sorted(e["started"] for e in events if e["kind"] == "execute")
    at: dict[str, float] = {}
    spent = 0.0
    for i, t0 in enumerate(starts):
        t1 = starts[i + 1] if i + 1 < len(starts) else float("inf")
        seg = [r for r in results if r.timings.finished is not None and t0 <= r.timings.finished < t1]
        for r in seg:
            at[r.request_id] = spent + (r.timings.finished - t0)
        spent += max((r.timings.finished - t0 for r in seg), default=0.0)
    return at, spent
