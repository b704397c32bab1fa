"""Local copies of public datasets, in their published formats, put where HELM looks for them.

HELM skips a download when its target path exists (README, "Data offline"). `stage` links
each dataset found under `--data-dir` to that path (symlinks: nothing is copied, and the source
stays read-only; HELM writes its lock files beside the link, never into the source), converting
only where HELM's file differs from the published one (CNN/DM: HELM reads a pickle).
`missing_inputs` says, per run and before any model loads, which files HELM will want and are
absent or empty, so an incomplete dataset is named up front instead of failing hours in (or, for an
empty file, instead of HELM silently reading a split without instances).
"""

from __future__ import annotations

import csv
import itertools
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from effbench.atomic import atomic_open
from effbench.contracts import EffbenchError

BBQ_CATEGORIES = (
    "Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance", "Race_ethnicity",
    "Race_x_SES", "Race_x_gender", "Religion", "SES", "Sexual_orientation",
)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() and dst.resolve() == src.resolve():
        return
    if dst.exists() or dst.is_symlink():
        raise EffbenchError(f"{dst}: already exists and is not a link to {src} (option --data-dir)")
    dst.symlink_to(src.resolve(), target_is_directory=src.is_dir())


# Format checks: HELM parses these files itself and would fail mid-run with a traceback on a bad
# row; checking them when staging names the file and line before anything is loaded.
def _bad(path: Path, line: int, what: str, dataset: str) -> EffbenchError:
    return EffbenchError(f"{path}:{line}: {what} (--data-dir, dataset {dataset})")


def _lines(path: Path, dataset: str) -> Iterator[str]:
    """The file's lines (endings kept) as UTF-8 text, streamed; an error names the line of the
    first NUL byte or invalid UTF-8 sequence (binary data, another encoding) instead of a
    traceback. Split on b"\\n" before decoding: no UTF-8 sequence holds that byte."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if b"\x00" in raw:
                raise _bad(path, number, "contains a NUL byte (binary data, not text)", dataset)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _bad(path, number, f"byte 0x{raw[e.start]:02x} is not UTF-8 text ({e.reason})", dataset) from None


def _is_blank(path: Path) -> bool:
    """Empty or only whitespace: such a file counts as missing (`missing_inputs`), since HELM would
    read it as a split without instances and carry on (5-shot becomes 0-shot)."""
    with path.open("rb") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _check_csv(path: Path, dataset: str, ncols: int, header: bool, last_in: str | None = None) -> None:
    if _is_blank(path):
        return  # reported as empty by missing_inputs, for the runs that need it
    lines = _lines(path, dataset)
    first = next(lines, "").removeprefix("\ufeff")  # a UTF-8 byte order mark, as utf-8-sig reads it
    for i, row in enumerate(csv.reader(itertools.chain([first], lines)), start=1):
        if header and i == 1:
            continue
        if len(row) < ncols:
            raise _bad(path, i, f"expected {ncols} columns, found {len(row)}", dataset)
        if last_in is not None and row[-1] not in last_in:
            raise _bad(path, i, f"last column {row[-1]!r} is not one of {', '.join(last_in)}", dataset)


def _check_jsonl(path: Path, dataset: str, keys: tuple[str, ...]) -> None:
    for i, line in enumerate(_lines(path, dataset), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad(path, i, f"not JSON ({e.msg})", dataset) from None
        missing = [k for k in keys if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise _bad(path, i, f"record lacks {', '.join(missing)}", dataset)


def _stage_mmlu(src: Path, helm: Path) -> None:
    for f in sorted(src.glob("*/*.csv")):  # question, A, B, C, D, answer letter; no header
        _check_csv(f, "mmlu", 6, header=False, last_in="ABCD")
    _link(src, helm / "scenarios/mmlu/data")  # published layout == HELM's: {dev,val,test}/<subject>_<split>.csv


def _stage_truthful_qa(src: Path, helm: Path) -> None:
    _check_csv(src / "TruthfulQA.csv", "truthful_qa", 7, header=True)
    _link(src / "TruthfulQA.csv", helm / "scenarios/truthful_qa/data/TruthfulQA.csv")


def _stage_bbq(src: Path, helm: Path) -> None:
    for f in sorted(src.glob("*.jsonl")):  # HELM's file name is the category, no extension
        _check_jsonl(f, "bbq", ("context", "question", "ans0", "ans1", "ans2", "label", "answer_info"))
        _link(f, helm / "scenarios/bbq/data" / f.stem)


def _stage_gsm(src: Path, helm: Path) -> None:
    for split in ("train", "test"):
        if (src / f"{split}.jsonl").is_file():
            _check_jsonl(src / f"{split}.jsonl", "gsm", ("question", "answer"))
            _link(src / f"{split}.jsonl", helm / f"scenarios/gsm/gsm_data_{split}")


def _stage_big_bench(src: Path, helm: Path) -> None:
    for task_json in sorted(src.glob("**/task.json")):
        if _is_blank(task_json):  # reported as empty by missing_inputs, for the runs that need it
            _link(task_json, helm / "scenarios/big_bench" / task_json.relative_to(src))
            continue
        try:
            task = json.loads("".join(_lines(task_json, "big_bench")))
        except json.JSONDecodeError as e:
            raise _bad(task_json, e.lineno, f"not JSON ({e.msg})", "big_bench") from None
        has_subtasks = any(p.is_dir() for p in task_json.parent.iterdir())
        if not isinstance(task, dict) or not ("examples" in task or has_subtasks):
            raise _bad(task_json, 1, "a BIG-bench task.json needs 'examples' (or subtask folders beside it)", "big_bench")
        _link(task_json, helm / "scenarios/big_bench" / task_json.relative_to(src))


def _read_frank(src: Path) -> dict[str, list[dict]]:
    """FRANK's CNN/DM test articles: one JSON per article with `article` and `bart_reference`
    (the reference highlights). Its validation ids become HELM's train split (the in-context
    examples), its test ids the test split: no article is both an example and a question."""
    splits: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    ids = {name: set((src / f"{name}_split.txt").read_text().split()) for name in ("validation", "test")}
    for path in sorted((src / "articles-wbertscore-json").glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            row = {"article": rec["article"], "highlights": rec["bart_reference"]}
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
            raise EffbenchError(f"{path}: not a FRANK article record ({type(e).__name__}: {e}) (--data-dir, dataset cnndm)") from None
        key = path.stem
        if key in ids["test"]:
            splits["test"].append(row)
        elif key in ids["validation"]:
            splits["train"].append(row)
    return splits


def _read_cnndm_csv(src: Path) -> dict[str, list[dict]]:
    """The CNN/DailyMail CSV release (train.csv / validation.csv / test.csv: id, article, highlights)."""
    splits: dict[str, list[dict]] = {}
    for name in ("train", "validation", "test"):
        path = src / f"{name}.csv"
        rows = []
        if path.is_file():
            for i, rec in enumerate(csv.DictReader(_lines(path, "cnndm")), start=2):
                if not rec.get("article") or rec.get("highlights") is None:
                    raise EffbenchError(f"{path}:{i}: row without article/highlights (--data-dir, dataset cnndm)")
                rows.append({"article": rec["article"], "highlights": rec["highlights"]})
        splits[name] = rows
    return splits


def _stage_cnndm(src: Path, helm: Path) -> None:
    """HELM's summarization scenario unpickles `data/cnndm.pk`; effbench writes that file itself
    from the published records (effbench's own pickle of plain dicts, never a downloaded one)."""
    target = helm / "scenarios/summarization/data/cnndm.pk"
    if target.is_file():
        return
    splits = _read_frank(src) if (src / "articles-wbertscore-json").is_dir() else _read_cnndm_csv(src)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, "wb") as f:  # whole or absent: a half-written file would pass the is_file() above
        pickle.dump(splits, f)


ETHICS_SUBSETS = ("justice", "commonsense", "virtue", "deontology", "utilitarianism")


def _stage_samsum(src: Path, helm: Path) -> None:
    _link(src, helm / "scenarios/sam_sum/data")  # {train,val,test}.json, read by effbench.challenge.helm_plugins


def _stage_corr2cause(src: Path, helm: Path) -> None:
    _link(src, helm / "scenarios/corr2cause/data")  # {train,dev,test}.csv


def _stage_ethics(src: Path, helm: Path) -> None:
    for subset in ETHICS_SUBSETS:  # the extracted release: <subset>/<prefix>_{train,test,test_hard}.csv
        if (src / subset).is_dir():
            _link(src, helm / f"scenarios/ethics_{subset}/data")


def _stage_math(src: Path, helm: Path) -> None:
    _link(src, helm / "scenarios/MATH/data/MATH")  # the MATH release: {train,test}/<subject>/<n>.json


@dataclass(frozen=True)
class Dataset:
    name: str
    sources: tuple[str, ...]  # candidate folders under --data-dir, first found wins
    stage: Callable[[Path, Path], None]
    where: str  # where the published dataset lives, for the error message


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset("mmlu", ("mmlu",), _stage_mmlu, "github.com/hendrycks/test (data.tar: {dev,val,test}/<subject>_<split>.csv)"),
        Dataset("truthful_qa", ("truthfulqa", "truthful_qa"), _stage_truthful_qa, "github.com/sylinrl/TruthfulQA (TruthfulQA.csv)"),
        Dataset("bbq", ("bbq",), _stage_bbq, "github.com/nyu-mll/BBQ (data/<Category>.jsonl, 11 categories)"),
        Dataset("gsm", ("gsm8k", "gsm"), _stage_gsm, "github.com/openai/grade-school-math (grade_school_math/data/{train,test}.jsonl)"),
        Dataset("big_bench", ("bigbench", "big_bench"), _stage_big_bench, "github.com/google/BIG-bench (bigbench/benchmark_tasks/<task>[/<subtask>]/task.json)"),
        Dataset("cnndm", ("cnndm_frank", "cnn_dailymail"), _stage_cnndm, "CNN/DailyMail ({train,validation,test}.csv: article, highlights) or FRANK's articles JSON"),
        Dataset("sam_sum", ("samsum", "sam_sum"), _stage_samsum, "the SAMSum corpus (arXiv 1911.12237: {train,val,test}.json)"),
        Dataset("corr2cause", ("corr2cause",), _stage_corr2cause, "github.com/causalNLP/corr2cause ({train,dev,test}.csv)"),
        Dataset("ethics", ("ethics",), _stage_ethics, "github.com/hendrycks/ethics (ethics.tar: <subset>/<prefix>_{train,test}.csv)"),
        Dataset("math", ("MATH", "math"), _stage_math, "github.com/hendrycks/math (MATH.tar: {train,test}/<subject>/<n>.json)"),
    )
}


# HELM run functions -> the dataset they read; functions that generate their own data read none.
# A function not listed here may read anything: every dataset is staged for it.
RUN_FUNCTION_DATASETS = {
    "mmlu": "mmlu", "truthful_qa": "truthful_qa", "bbq": "bbq", "gsm": "gsm", "big_bench": "big_bench",
    "summarization_cnndm": "cnndm", "sam_sum": "sam_sum", "corr2cause": "corr2cause", "math": "math",
    "ethics_commonsense": "ethics", "ethics_deontology": "ethics", "ethics_justice": "ethics",
    "ethics_utilitarianism": "ethics", "ethics_virtue": "ethics",
    "synthetic_reasoning": None, "dyck_language": None,
}


def datasets_for(run_functions: set[str]) -> set[str] | None:
    """The datasets a suite's runs read (by their HELM run functions); None: not known, stage all.
    Staging checks every file of a dataset (BIG-bench has hundreds): only what the suite reads."""
    if not run_functions <= RUN_FUNCTION_DATASETS.keys():
        return None
    return {d for f in run_functions if (d := RUN_FUNCTION_DATASETS[f]) is not None}


def offline_hint(entries) -> str:
    """What to do where HELM could not download a dataset: --data-dir, and the folders it reads
    under it for these suite entries."""
    wanted = datasets_for({e.split(":", 1)[0] for e in entries})
    names = sorted(wanted) if wanted is not None else sorted(DATASETS)
    folders = ", ".join(DATASETS[n].sources[0] for n in names if n in DATASETS)
    return f"offline? give --data-dir DIR with local copies of the public datasets (folders under it: {folders}; e.g. ../shared/data)"


def stage(data_dir: Path, helm_dir: Path, wanted: set[str] | None = None) -> list[str]:
    """Link (or convert) every known dataset found in `data_dir` (only those in `wanted` when
    given); returns the names staged."""
    if not data_dir.is_dir():
        raise EffbenchError(f"--data-dir: {data_dir} is not a folder")
    staged = []
    for ds in DATASETS.values():
        if wanted is not None and ds.name not in wanted:
            continue
        src = next((data_dir / s for s in ds.sources if (data_dir / s).exists()), None)
        if src is not None:
            ds.stage(src, helm_dir)
            staged.append(ds.name)
    return staged


def _required(class_name: str, args: dict) -> tuple[str, list[str]] | None:
    """(dataset, files under the HELM output folder) that a scenario reads; None: no local data."""
    cls = class_name.rsplit(".", 1)[-1]
    if cls == "MMLUScenario":
        s = args["subject"]
        return "mmlu", [f"scenarios/mmlu/data/{split}/{s}_{split}.csv" for split in ("dev", "val", "test")]
    if cls == "TruthfulQAScenario":
        return "truthful_qa", ["scenarios/truthful_qa/data/TruthfulQA.csv"]
    if cls == "BBQScenario":
        cats = BBQ_CATEGORIES if args.get("subject", "all") == "all" else (args["subject"],)
        return "bbq", [f"scenarios/bbq/data/{c}" for c in cats]
    if cls == "GSM8KScenario":
        return "gsm", ["scenarios/gsm/gsm_data_train", "scenarios/gsm/gsm_data_test"]
    if cls == "BIGBenchScenario":
        parts = [args["task"]] + ([args["subtask"]] if args.get("subtask") else [])
        return "big_bench", ["scenarios/big_bench/" + "/".join(parts) + "/task.json"]
    if cls == "SummarizationScenario" and args.get("dataset_name") == "cnn-dm":
        return "cnndm", ["scenarios/summarization/data/cnndm.pk"]
    if cls == "SamSumScenario":
        return "sam_sum", [f"scenarios/sam_sum/data/{split}.json" for split in ("train", "val", "test")]
    if cls == "Corr2CauseScenario":
        return "corr2cause", [f"scenarios/corr2cause/data/{split}.csv" for split in ("train", "dev", "test")]
    if cls.startswith("Ethics") and cls.endswith("Scenario"):
        from effbench.challenge.helm_plugins import ethics

        sc = getattr(ethics, cls)
        base = f"scenarios/{sc.name}/data/{sc.subset}/{sc.prefix}"
        return "ethics", [f"{base}_train.csv", f"{base}_{args.get('test_set', 'test')}.csv"]
    if cls in ("MATHScenario", "OfflineMATHScenario"):
        return "math", ["scenarios/MATH/data/MATH/test", "scenarios/MATH/data/MATH/train"]
    return None


@dataclass(frozen=True)
class MissingData:
    dataset: str
    path: Path  # the first file HELM will look for and not find (or find empty)
    missing: int  # how many of the run's files are absent or empty
    total: int
    empty: int = 0  # how many of the missing ones exist but are empty (or only whitespace)

    @property
    def where(self) -> str:
        return DATASETS[self.dataset].where if self.dataset in DATASETS else "see the scenario's documentation"

    @property
    def complete_absence(self) -> bool:
        return self.missing == self.total

    def line(self, run: str) -> str:
        empty = f", {self.empty} of them empty" if self.empty else ""
        # an empty file is named where the user put it (HELM's path is a link into --data-dir)
        first = f"{self.path.resolve()} is empty" if self.path.exists() else f"expected {self.path}"
        return (f"run {run}: dataset {self.dataset} is missing {self.missing} of {self.total} files{empty}"
                f" ({first}); get it from {self.where} and pass its folder with --data-dir")


# Run spec functions that read their data while the run spec is built (BIG-bench reads task.json
# to choose the adapter and metrics), mapped to the scenario class whose files they need.
READ_AT_SPEC_TIME = {"big_bench": "BIGBenchScenario"}


def missing_inputs(class_name: str, args: dict, helm_dir: Path) -> MissingData | None:
    """`class_name`: a scenario class, or a run spec function name of READ_AT_SPEC_TIME."""
    req = _required(READ_AT_SPEC_TIME.get(class_name, class_name), args)
    if req is None:
        return None
    dataset, files = req
    paths = [helm_dir / f for f in files]
    empty = [p for p in paths if p.is_file() and _is_blank(p)]  # a folder (MATH's splits) is not checked
    absent = [p for p in paths if not p.exists() or p in empty]
    if not absent:
        return None
    return MissingData(dataset, absent[0], len(absent), len(files), len(empty))
