"""HELM scenario instances, cached across runs: a scenario's get_instances() reads and parses its
whole dataset (or, for the synthetic scenarios, generates thousands of instances) before a run
keeps its few dozen; the same scenario with the same arguments and the same files gives the same
instances, so effbench keeps them as JSON in its cache folder.

The key: the crfm-helm version, the scenario's class and arguments, and the name, size and
modification time of every file under the scenario's data folder (links followed, as staged by
effbench/challenge/data.py). JSON, never pickle: the cache is read back with dacite into HELM's
own dataclasses, as HELM reads its scenario_state.json. An entry that cannot be read is rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

import dacite
from helm.benchmark.scenarios.scenario import Input, Instance, Output, Reference, Scenario, ScenarioSpec

from effbench.atomic import write_text_atomic

CACHE_FORMAT = "effbench-instances-v1"


def _files(folder: Path) -> list[tuple[str, int, int]]:
    if not folder.exists():
        return []
    out = []
    for root, _dirs, names in os.walk(folder, followlinks=True):
        for name in names:
            p = Path(root) / name
            if name.endswith(".lock"):  # HELM's lock files come and go
                continue
            try:
                st = p.stat()
            except OSError:
                continue
            out.append((str(p.relative_to(folder)), st.st_size, st.st_mtime_ns))
    return sorted(out)


_PLAIN_INSTANCE = {"input", "references", "split", "sub_split", "id", "perturbation", "contrast_inputs",
                   "contrast_references", "extra_data"}


def _plain(d: dict, keys: set[str]) -> bool:
    """Only text (no multimedia, chat messages): the shape read directly, without dacite."""
    return set(d) <= keys and all(d.get(k) is None for k in keys - {"text", "output", "tags"})


def instance_from_json(d: dict) -> Instance:
    """An Instance from its dataclasses.asdict form. Text-only instances (almost all) are built
    directly: dacite's type checks cost more than the scenario took to read its files; anything
    else (multimedia, perturbations, contrast sets) goes through dacite."""
    refs = d.get("references") or []
    if (set(d) <= _PLAIN_INSTANCE and d.get("perturbation") is None and d.get("contrast_inputs") is None
            and d.get("contrast_references") is None and _plain(d["input"], {"text", "multimedia_content", "messages"})
            and all(set(r) <= {"output", "tags"} and _plain(r["output"], {"text", "multimedia_content"}) for r in refs)):
        return Instance(input=Input(text=d["input"]["text"]),
                        references=[Reference(output=Output(text=r["output"]["text"]), tags=list(r["tags"])) for r in refs],
                        split=d.get("split"), sub_split=d.get("sub_split"), id=d.get("id"), extra_data=d.get("extra_data"))
    return dacite.from_dict(Instance, d)


def cache_key(spec: ScenarioSpec, data_folder: Path) -> str:
    ident = {"format": CACHE_FORMAT, "helm": metadata.version("crfm-helm"), "class": spec.class_name,
             "args": spec.args, "files": _files(data_folder)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


def get_instances(scenario: Scenario, spec: ScenarioSpec, data_folder: Path, cache_dir: Path | None) -> list[Instance]:
    """scenario.get_instances(data_folder), from the cache when this scenario, arguments and
    files were seen before; `cache_dir` None: no cache."""
    if cache_dir is None:
        return scenario.get_instances(str(data_folder))
    key = cache_key(spec, data_folder)
    path = cache_dir / f"{spec.class_name.rsplit('.', 1)[-1]}-{key}.json"
    if path.is_file():
        try:
            return [instance_from_json(d) for d in json.loads(path.read_text(encoding="utf-8"))]
        except (ValueError, TypeError, dacite.DaciteError):  # a broken entry: rebuilt below, overwritten
            pass
    instances = scenario.get_instances(str(data_folder))
    if cache_key(spec, data_folder) != key:  # it downloaded or wrote its files now: key them next time
        return instances
    try:
        text = json.dumps([dataclasses.asdict(i) for i in instances], ensure_ascii=False)
    except (TypeError, ValueError):  # extra_data a scenario filled with something JSON cannot hold
        return instances
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return instances
