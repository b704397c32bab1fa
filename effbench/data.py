"""Put local copies of public datasets where HELM looks for them, so nothing is downloaded.

HELM skips a download when its target path exists (CHALLENGE.md, "HELM offline"). For datasets
whose published layout is HELM's own, a symlink is enough: nothing is copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from effbench.contracts import EffbenchError


@dataclass(frozen=True)
class Dataset:
    name: str
    source: str  # path under --data-dir, in the dataset's published layout
    target: str  # path under HELM's output folder
    where: str  # where to get it, for the error message


DATASETS = (
    Dataset("mmlu", "mmlu", "scenarios/mmlu/data", "hendrycks/test: data.tar ({dev,val,test}/<subject>_<split>.csv)"),
)


def stage(data_dir: Path, helm_dir: Path) -> list[str]:
    """Link every dataset found in `data_dir` into `helm_dir`; returns the names staged."""
    if not data_dir.is_dir():
        raise EffbenchError(f"--data-dir: {data_dir} is not a folder")
    staged = []
    for ds in DATASETS:
        src = (data_dir / ds.source).resolve()
        if not src.exists():
            continue
        dst = helm_dir / ds.target
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() and dst.resolve() == src:
            staged.append(ds.name)
            continue
        if dst.exists() or dst.is_symlink():
            raise EffbenchError(f"{dst}: already exists and is not a link to {src} (option --data-dir, dataset {ds.name})")
        dst.symlink_to(src, target_is_directory=src.is_dir())
        staged.append(ds.name)
    return staged
