"""`effbench contamination` scan speed: a 100k-example training jsonl (~60 words an example)
against ~2000 real eval items (the default suite's HELM scenarios at 500 instances a run), with
60 eval items planted in it. Reports examples/s in extra_info; the only timing assertion is a
generous sanity bound. The eval side (HELM, ~5 s) and the file are built once, outside the timing.

Run: .venv/bin/pytest bench/test_contamination_speed.py -q -s --benchmark-only
"""

from __future__ import annotations

import json
import random

import pytest

from effbench.challenge import contamination as C
from effbench.challenge import contamination_ngrams as N

EXAMPLES = 100_000
WORDS = 60
PLANTED = 60


@pytest.fixture(scope="module")
def eval_runs(tmp_path_factory):
    from effbench.challenge.helm_eval_runs import suite_eval_instances
    from effbench.challenge.suites import load_suite

    d = tmp_path_factory.mktemp("suite")
    default = load_suite("default")
    runs = "".join(f'\n[[runs]]\nentry = "{r.entry}"\n' for r in default.runs)
    (d / "big.toml").write_text(f'name = "default-500"\nbudget_minutes = 10\nmax_eval_instances = 500\n{runs}')
    return suite_eval_instances(load_suite(str(d / "big.toml")), d / "helm")


@pytest.fixture(scope="module")
def training(eval_runs, tmp_path_factory):
    """100k jsonl examples of instruction/output text. The words are the eval items' own words
    plus common English, so windows reach the exact-compare step, not only the prefilter."""
    rng = random.Random(0)
    eval_words = sorted({w for r in eval_runs for i in r.instances for w in N.words(i.input.text)})
    vocab = eval_words + ("the of and a to in is was for on that with as by it from at this be or are "
                          "an not but what all were when we there can which their if will each about how up").split()
    scored = [(r.run, i) for r in eval_runs for i in r.instances if N.words(i.input.text)]
    planted = {}
    for k in rng.sample(range(EXAMPLES), PLANTED):
        planted[k + 1] = scored[rng.randrange(len(scored))]
    path = tmp_path_factory.mktemp("train") / "train.jsonl"
    with path.open("w") as f:
        for k in range(EXAMPLES):
            ws = rng.choices(vocab, k=WORDS)
            text = " ".join(ws)
            item = planted.get(k + 1)
            if item is not None:
                text = " ".join(ws[:20]) + " " + item[1].input.text + " " + " ".join(ws[20:40])
            f.write(json.dumps({"instruction": " ".join(ws[:8]).capitalize() + "?", "output": text}) + "\n")
    return path, planted


def test_contamination_scan_100k_examples(benchmark, eval_runs, training):
    path, planted = training
    report = benchmark.pedantic(C.check, args=(path, eval_runs), rounds=3, iterations=1, warmup_rounds=0)
    seconds = benchmark.stats.stats.median
    benchmark.extra_info.update({
        "examples": report.examples,
        "words": report.words,
        "eval_items": report.eval_items,
        "eval_ngrams": report.eval_grams,
        "ngram_lengths": N.GramIndex([it for run, _, insts in eval_runs for it in N.eval_items(run, insts)], 13).lengths,
        "examples_per_s": round(report.examples / seconds),
        "words_per_s": round(report.words / seconds),
    })
    print(f"\ncontamination scan: {report.examples} examples, {report.words} words, {report.eval_items} eval items"
          f" ({report.eval_grams} n-grams): median {seconds:.2f} s = {report.examples / seconds:,.0f} examples/s")
    assert report.examples == EXAMPLES and report.eval_items >= 1500
    found = {(o.run, o.id): o for r in report.runs for o in r.overlaps}
    for line, (run, inst) in planted.items():
        o = found[(run, inst.id)]
        assert o.flagged and o.overlap == 1.0
        assert o.train_line <= line  # the same words may also sit in an earlier planted line
    assert {found[(run, inst.id)].train_line for line, (run, inst) in planted.items()} <= set(planted)
    assert seconds < 120  # sanity only: ~1-3 s on 2 CPU cores
