"""`effbench contamination`: eval items of a suite (real HELM instances, no model) planted in a
training file are flagged, with the right training line; clean text flags nothing; thresholds,
n-gram edge cases, the three training formats, and one-line errors through the CLI."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from effbench.challenge import contamination as C
from effbench.challenge import contamination_files as F
from effbench.challenge import contamination_ngrams as N
from effbench.cli import app
from effbench.contracts import EffbenchError

runner = CliRunner()
FILLER = ("the of and a to in is was for on that with as by it from at this be or are model data "
          "result rule horse seal apple lion penguin zebra kiwi grape watermelon peach rat stork").split()


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """The default suite's eval instances (HELM synthetic scenarios: no data, no model)."""
    from effbench.challenge.helm_eval_runs import suite_eval_instances
    from effbench.challenge.suites import load_suite

    return suite_eval_instances(load_suite("default"), tmp_path_factory.mktemp("helm"))


def inst(id: str, text: str, answers=(), split="test"):
    refs = [SimpleNamespace(output=SimpleNamespace(text=a), tags=["correct"]) for a in answers]
    refs.append(SimpleNamespace(output=SimpleNamespace(text="a wrong answer"), tags=[]))
    return SimpleNamespace(id=id, split=split, input=SimpleNamespace(text=text), references=refs)


def clean_text(rng: random.Random, k: int = 60) -> str:
    return " ".join(rng.choices(FILLER, k=k)).capitalize() + "."


def by_id(report: C.ContaminationReport) -> dict[tuple[str, str], C.ItemOverlap]:
    return {(o.run, o.id): o for r in report.runs for o in r.overlaps}


def flagged(report: C.ContaminationReport) -> set[tuple[str, str]]:
    return {(o.run, o.id) for r in report.runs for o in r.overlaps if o.flagged}


def naive_overlaps(runs, examples: list[str], n: int) -> dict[tuple[str, str], float]:
    """Reference implementation: plain Python sets of word tuples, one example at a time."""
    found: set[tuple[str, ...]] = set()
    items = [it for run, _, instances in runs for it in N.eval_items(run, instances)]
    lengths = {len(g) for it in items for seg in N.item_segments(it, n) for g in N.ngrams(seg, n)}
    for ex in examples:
        ws = N.words(ex)
        for k in lengths:
            found.update(tuple(ws[i : i + k]) for i in range(len(ws) - k + 1))
    out = {}
    for it in items:
        grams = {g for seg in N.item_segments(it, n) for g in N.ngrams(seg, n)}
        if grams:
            hit = sum(g in found for g in grams)
            if hit:
                out[(it.run, it.id)] = round(hit / len(grams), 4)
    return out


# ------------------------------------------------------------------ real HELM items, 3 formats


def _planted(default_runs) -> list[tuple[str, object]]:
    """One item of each synthetic_reasoning run (Dyck items are bracket strings: no words)."""
    return [(r.run, r.instances[3]) for r in default_runs if r.scenario == "synthetic_reasoning"]


def _write_jsonl(path: Path, planted, rng) -> tuple[dict, list[str]]:
    lines, where, examples = [], {}, []
    for k in range(300):
        text = clean_text(rng)
        if k % 100 == 50 and planted:
            run, i = planted.pop()
            text = f"{text[:80]} {i.input.text} {text[80:]}"
            where[(run, i.id)] = k + 1
        examples.append(text)
        lines.append(json.dumps({"instruction": text[:30], "input": "", "output": text[30:], "n": k}))
    lines.insert(10, "")  # a blank line is skipped (and still counts in line numbers)
    where = {key: (ln + 1 if ln > 10 else ln) for key, ln in where.items()}
    path.write_text("\n".join(lines) + "\n")
    return where, examples


def _write_csv(path: Path, planted, rng) -> tuple[dict, list[str]]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["prompt", "completion"])
    w.writerow(["a cell over\ntwo lines", "so rows and lines differ"])  # lines 2-3
    where, examples = {}, ["a cell over\ntwo lines\nso rows and lines differ"]
    for k in range(200):
        line = buf.getvalue().count("\n") + 1
        text = clean_text(rng)
        if k % 70 == 30 and planted:
            run, i = planted.pop()
            text = f"{text[:50]}, {i.input.text}"  # items hold quotes and commas: csv quotes them
            where[(run, i.id)] = line
        examples.append(text + "\n" + "answer, or not")
        w.writerow([text, "answer, or not"])
    path.write_text(buf.getvalue())
    return where, examples


def _write_txt(path: Path, planted, rng) -> tuple[dict, list[str]]:
    lines, where, examples = [], {}, []
    for k in range(200):
        para = [clean_text(rng, 20), clean_text(rng, 20)]
        if k % 70 == 30 and planted:
            run, i = planted.pop()
            ws = i.input.text.split(" ")
            half = len(ws) // 2  # the item wrapped over two lines: n-grams cross single line breaks
            para = [clean_text(rng, 10) + " " + " ".join(ws[:half]), " ".join(ws[half:]) + " " + clean_text(rng, 10)]
            where[(run, i.id)] = len(lines) + 1
        examples.append("\n".join(para))
        lines += para + [""]
    path.write_text("\n".join(lines))
    return where, examples


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "txt"])
def test_planted_items_are_flagged_with_their_line(default_runs, tmp_path, fmt):
    rng = random.Random(fmt)
    path = tmp_path / f"train.{fmt}"
    where, examples = {"jsonl": _write_jsonl, "csv": _write_csv, "txt": _write_txt}[fmt](path, _planted(default_runs), rng)
    assert len(where) == 3
    report = C.check(path, default_runs)
    assert report.format == fmt and report.eval_items == 80
    found = by_id(report)
    for key, line in where.items():
        assert found[key].flagged and found[key].overlap == 1.0, found.get(key)
        assert found[key].train_line == line
    # anything else flagged is an item that normalises to words inside a planted item (symbols
    # are dropped: "+ = X" and "= + X" read alike), exactly as the naive reference computes
    assert {k: o.overlap for k, o in found.items()} == naive_overlaps(default_runs, examples, 13)
    assert flagged(report) >= set(where)
    dyck = next(r for r in report.runs if r.scenario == "dyck_language")
    assert dyck.items == dyck.unscored == 20 and dyck.flagged == 0


def test_clean_training_text_flags_nothing(default_runs, tmp_path):
    """The same vocabulary as the eval items (every word of every item), in random order."""
    rng = random.Random(1)
    vocab = sorted({w for r in default_runs for i in r.instances for w in N.words(i.input.text)})
    path = tmp_path / "clean.jsonl"
    with path.open("w") as f:
        for _ in range(2000):
            f.write(json.dumps({"text": " ".join(rng.choices(vocab, k=40))}) + "\n")
    report = C.check(path, default_runs)
    assert report.examples == 2000
    assert [(r.touched, r.flagged) for r in report.runs] == [(0, 0)] * 4
    assert report.flagged == 0


# ------------------------------------------------------------------ threshold, n, n-grams


def test_threshold_is_a_fraction_of_distinct_ngrams(tmp_path):
    item = " ".join(f"word{i}" for i in range(40))  # 40 distinct words: 28 13-grams
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"text": "intro " + " ".join(f"word{i}" for i in range(20)) + " outro"}) + "\n")
    runs = [("r", "s", [inst("a", item)])]
    o = C.check(path, runs, threshold=0.25).runs[0].overlaps[0]
    assert (o.grams, o.grams_found, o.overlap, o.flagged) == (28, 8, round(8 / 28, 4), True)
    r = C.check(path, runs, threshold=0.3).runs[0]
    assert (r.touched, r.flagged, r.overlaps[0].flagged) == (1, 0, False)
    assert C.check(path, runs, threshold=1.0).runs[0].flagged == 0
    o = C.check(path, runs, n=5, threshold=0.4).runs[0].overlaps[0]  # 16 of 36 5-grams
    assert (o.grams, o.grams_found, o.flagged) == (36, 16, True)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(EffbenchError, match="--threshold"):
            C.check(path, runs, threshold=bad)
    with pytest.raises(EffbenchError, match="--n"):
        C.check(path, runs, n=0)


def test_default_threshold_and_n():
    assert (C.DEFAULT_N, C.DEFAULT_THRESHOLD) == (13, 0.2)


def test_words_and_ngrams():
    assert N.words("Hello, WORLD! don't snake_case 3.14 Ünïcode Straße — «ok»") == [
        "hello", "world", "don", "t", "snake", "case", "3", "14", "ünïcode", "straße", "ok"]
    assert N.words("[ ( ] ) + = |") == []
    assert N.ngrams([], 3) == []
    assert N.ngrams(["a", "b"], 3) == [("a", "b")]  # shorter than n: the whole item
    assert N.ngrams(["a", "b", "c"], 3) == [("a", "b", "c")]
    assert N.ngrams(list("abcd"), 3) == [("a", "b", "c"), ("b", "c", "d")]
    assert N.ngrams(list("ababab"), 2) == [("a", "b"), ("b", "a")]  # distinct, in order


def test_item_segments_score_long_answers_only():
    long_answer = " ".join(f"s{i}" for i in range(13))
    item = N.eval_items("r", [inst("a", "What is it?", answers=("Paris", long_answer))])[0]
    assert item.answers == ("Paris", long_answer)  # only correct references
    assert N.item_segments(item, 13) == [["what", "is", "it"], long_answer.split()]


def _check_texts(tmp_path, texts: list[str], items, name="t.jsonl", **kw) -> C.ContaminationReport:
    path = tmp_path / name
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return C.check(path, [("r", "s", items)], **kw)


def test_short_items_match_only_whole(tmp_path):
    items = [inst("short", "Which of the following is true?"), inst("brackets", "[ ( ) ]"), inst("empty", "")]
    rep = _check_texts(tmp_path, ["which of the following is", "Q: WHICH of the following -- is true? A: yes"], items)
    r = rep.runs[0]
    assert (r.items, r.unscored, r.touched, r.flagged) == (3, 2, 1, 1)
    assert r.overlaps[0].id == "short" and r.overlaps[0].train_line == 2 and r.overlaps[0].grams == 1


def test_ngrams_do_not_cross_examples_but_cross_txt_lines(tmp_path):
    item = inst("a", "alpha beta gamma delta epsilon")
    assert _check_texts(tmp_path, ["x alpha beta", "gamma delta epsilon y"], [item]).runs[0].touched == 0
    txt = tmp_path / "t.txt"
    txt.write_text("x alpha beta\ngamma delta epsilon y\n")
    o = C.check(txt, [("r", "s", [item])]).runs[0].overlaps[0]
    assert o.flagged and o.train_line == 1
    txt.write_text("x alpha beta\n\ngamma delta epsilon y\n")  # a blank line ends an example
    assert C.check(txt, [("r", "s", [item])]).runs[0].touched == 0


def test_unicode_separators_and_batches(tmp_path, monkeypatch):
    items = [inst("es", "¿Él comió la manzana roja en el jardín de la casa?"), inst("en", "the quick brown fox jumps")]
    texts = ["plain ascii line", "ÉL COMIÓ LA MANZANA ROJA EN EL JARDÍN DE LA CASA", "café: The quick, brown fox; jumps!",
             "nul\x00inside the\x00quick brown fox jumps \x01 here"]
    monkeypatch.setattr(N, "_BATCH_CHARS", 10)  # one batch per example: batch edges change nothing
    rep = _check_texts(tmp_path, texts * 3, items)
    assert {(o.id, o.train_line, o.flagged) for o in rep.runs[0].overlaps} == {("es", 2, True), ("en", 3, True)}
    assert by_id(rep)[("r", "en")].train_excerpt.startswith("café: The quick")
    monkeypatch.undo()
    assert {o.id for o in _check_texts(tmp_path, texts[3:], items).runs[0].overlaps} == {"en"}  # NUL: a space


def test_answer_in_example_and_excerpt(tmp_path):
    q = "Which philosopher wrote the famous Critique of Pure Reason in the year 1781?"  # 13 words
    items = [inst("k", q, answers=("Immanuel Kant",)), inst("h", q + " Or not", answers=("Hume",))]
    rep = _check_texts(tmp_path, ["filler " * 50 + f"Question: {q}\nAnswer: Immanuel Kant"], items)
    got = by_id(rep)
    assert got[("r", "k")].answer_in_example is True
    assert got[("r", "k")].train_excerpt.startswith("…") and "Critique of Pure Reason" in got[("r", "k")].train_excerpt
    assert got[("r", "h")].answer_in_example is False and got[("r", "h")].overlap == round(1 / 3, 4)


def test_jsonl_field_and_csv_column(tmp_path):
    item = [inst("a", "one two three four five six")]
    path = tmp_path / "f.jsonl"
    path.write_text('{"prompt": "one two three four five six", "out": "x"}\n{"out": "y"}\n')
    assert C.check(path, [("r", "s", item)], field_name="out").runs[0].touched == 0
    with pytest.raises(EffbenchError, match=r"f\.jsonl: line 2: no field 'prompt'"):
        C.check(path, [("r", "s", item)], field_name="prompt")
    tsv = tmp_path / "f.tsv"
    tsv.write_text("prompt\tout\nhello there friend\tone two three four five six\n")
    assert C.check(tsv, [("r", "s", item)], field_name="out").runs[0].flagged == 1
    assert C.check(tsv, [("r", "s", item)], field_name="prompt").runs[0].flagged == 0
    with pytest.raises(EffbenchError, match="no column 'nope'"):
        C.check(tsv, [("r", "s", item)], field_name="nope")
    (tmp_path / "x.txt").write_text("one two three four five six\n")
    with pytest.raises(EffbenchError, match="--field applies to .jsonl and .csv"):
        C.check(tmp_path / "x.txt", [("r", "s", item)], field_name="x")


def test_training_file_errors(tmp_path):
    with pytest.raises(EffbenchError, match="does not exist"):
        F.training_format(tmp_path / "missing.jsonl")
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(EffbenchError, match=r"t\.parquet: unsupported extension '\.parquet'"):
        F.training_format(tmp_path / "t.parquet")
    odd = tmp_path / "odd.csv"  # an unterminated quote: read leniently, the rest is one cell
    odd.write_text('1,2\nx,"open quote, y\nz\n')
    assert [(line, text) for line, text, _ in F.read_training(odd)] == [(1, "1\n2"), (2, "x\nopen quote, y\nz\n")]


# ------------------------------------------------------------------ CLI


def _one_line_error(res) -> str:
    out = res.output  # click >= 8.2 mixes stderr into output
    assert isinstance(res.exception, SystemExit), f"uncaught {res.exception!r}\n{out}"
    assert res.exit_code == 2, out
    assert "Traceback" not in out, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    return lines[0]


def test_cli_malformed_jsonl_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "broken\n{"text": "fine"}\n')
    line = _one_line_error(runner.invoke(app, ["contamination", str(path), "--runs", "dyck*"]))
    assert f"{path}: line 3: not valid JSON" in line


def test_cli_errors_before_helm(tmp_path):
    assert "does not exist (argument TRAIN_FILE)" in _one_line_error(runner.invoke(app, ["contamination", str(tmp_path / "no.jsonl")]))
    (tmp_path / "t.json").write_text("[]")
    assert "unsupported extension '.json'" in _one_line_error(runner.invoke(app, ["contamination", str(tmp_path / "t.json")]))
    (tmp_path / "t.jsonl").write_text("")
    assert "unknown suite 'nope'" in _one_line_error(runner.invoke(app, ["contamination", str(tmp_path / "t.jsonl"), "--suite", "nope"]))
    assert "--threshold" in _one_line_error(runner.invoke(app, ["contamination", str(tmp_path / "t.jsonl"), "--threshold", "2"]))
    assert "--runs: pattern 'zzz*' matches no run" in _one_line_error(
        runner.invoke(app, ["contamination", str(tmp_path / "t.jsonl"), "--runs", "zzz*"]))


def test_cli_table_and_json(default_runs, tmp_path):
    run = next(r for r in default_runs if r.run == "synthetic_reasoning:mode=induction")
    item = run.instances[5]
    path = tmp_path / "train.txt"
    path.write_text("nothing here\n\n" + f"we trained on {item.input.text} oops\n")
    res = runner.invoke(app, ["contamination", str(path), "--runs", "*induction*", "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert "synthetic_reasoning:mode=induction" in res.output and item.id in res.output and "train line 3" in res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert (data["suite"], data["format"], data["n"], data["threshold"], data["examples"]) == ("default", "txt", 13, 0.2, 2)
    [r] = data["runs"]
    assert r["items"] == 20 and r["flagged"] >= 1 and r["max_overlap"] == 1.0
    o = next(o for o in r["overlaps"] if o["id"] == item.id)
    assert o["flagged"] and o["train_line"] == 3 and "we trained on" in o["train_excerpt"]


def test_cli_help():
    res = runner.invoke(app, ["contamination", "--help"])
    assert res.exit_code == 0
    for opt in ("--suite", "--data-dir", "--max-eval-instances", "--runs", "--n", "--threshold", "--json", "--field"):
        assert opt in res.output


# ------------------------------------------------------------------ real MMLU (../shared/data)


def test_mmlu_philosophy_questions_in_training_data(shared_data, tmp_path):
    from effbench.challenge.data import stage
    from effbench.challenge.helm_eval_runs import suite_eval_instances
    from effbench.challenge.suites import load_suite

    suite = tmp_path / "mmlu-philosophy.toml"
    suite.write_text('name = "mmlu-philosophy"\nbudget_minutes = 5\nmax_eval_instances = 30\n\n'
                     '[[runs]]\nentry = "mmlu:subject=philosophy"\n')
    helm = tmp_path / "helm"
    stage(shared_data, helm)
    [run] = suite_eval_instances(load_suite(str(suite)), helm)
    assert run.scenario == "mmlu" and len(run.instances) == 30
    planted = run.instances[:3]
    rng = random.Random(2)
    lines = [json.dumps({"instruction": clean_text(rng), "output": clean_text(rng)}) for _ in range(500)]
    for k, i in enumerate(planted):
        answer = next(r.output.text for r in i.references if "correct" in r.tags)
        lines.insert(100 * (k + 1), json.dumps({"instruction": f"Answer the question.\n{i.input.text}", "output": answer}))
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["contamination", str(train), "--suite", str(suite), "--data-dir", str(shared_data),
                              "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    [r] = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert r["run"].startswith("mmlu:subject=philosophy") and r["items"] == 30
    got = {o["id"]: o for o in r["overlaps"] if o["flagged"]}
    assert set(got) == {i.id for i in planted}
    assert [got[i.id]["train_line"] for i in planted] == [101, 201, 301]
    assert all(got[i.id]["answer_in_example"] for i in planted)
