"""`effbench report OUT --html` on a real run and a real check: the page is self-contained, every
plot is drawn by a real browser (headless Chromium, network off), and bad or older inputs give one
line or a note instead of a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from effbench.cli import app
from effbench.report.html import write_html_report

runner = CliRunner()
PLOTS = ("plot-throughput", "plot-memory", "plot-time-per-run", "plot-score-budget", "plot-predicted")
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours, used for the main series
URL_ATTRS = {"src", "href", "xlink:href", "srcset", "action", "data", "poster", "formaction", "background"}


@pytest.fixture(scope="module")
def run_and_check(demo_submission, cache_dir, tmp_path_factory) -> tuple[Path, Path]:
    """One real run of the demo (default suite) and one real check of it on this machine."""
    tmp = tmp_path_factory.mktemp("html-report")
    out, chk = tmp / "run", tmp / "check"
    res = runner.invoke(app, ["run", str(demo_submission), "--out", str(out), "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["check", str(demo_submission), "--suite", "default", "--track", "here", "--probe", "0.1",
                              "--in-process", "--out", str(chk), "--cache-dir", str(cache_dir)])
    assert res.exit_code in (0, 1, 2), res.output  # the verdicts; 3 is a check that could not run
    return out, chk


@pytest.fixture(scope="module")
def report(run_and_check) -> Path:
    out, chk = run_and_check
    dest = out.parent / "pages" / "report.html"
    res = runner.invoke(app, ["report", str(out), "--html", "--html-out", str(dest), "--prediction", str(chk)])
    assert res.exit_code == 0, res.output
    assert f"HTML report: {dest}" in res.output and "synthetic_reasoning" in res.output  # summary table printed too
    return dest


class Page(HTMLParser):
    """Every start tag with its attributes, the open figure each one sits in, and the text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict, str | None]] = []
        self.figures: list[str | None] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self.figures.append(a.get("id"))
        self.tags.append((tag, a, self.figures[-1] if self.figures else None))

    def handle_endtag(self, tag):
        if tag == "figure":
            self.figures.pop()

    def handle_data(self, data):
        self.text.append(data)

    def in_figure(self, fig_id: str, tag: str) -> list[dict]:
        return [a for t, a, f in self.tags if t == tag and f == fig_id]

    def figure(self, fig_id: str) -> dict | None:
        return next((a for t, a, _ in self.tags if t == "figure" and a.get("id") == fig_id), None)


def _remote(value: str) -> bool:
    v = value.strip().lower()
    return v.startswith(("http:", "https:", "//", "ftp:")) or "url(http" in v or "url(//" in v


def test_html_is_self_contained(report):
    text = report.read_text()
    page = Page(text)
    for tag, attrs, _ in page.tags:
        assert not (tag == "script" and "src" in attrs), attrs
        assert tag not in ("link", "iframe", "img", "object", "embed", "base"), (tag, attrs)
        for name, value in attrs.items():
            if name in URL_ATTRS or name == "style":
                assert not _remote(value or ""), (tag, name, value)
    assert "@import" not in text and "url(http" not in text and "<!DOCTYPE svg" not in text
    csp = [a["content"] for t, a, _ in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]  # the browser would refuse any fetch
    ids = [a["id"] for _, a, _ in page.tags if "id" in a]
    assert len(ids) == len(set(ids)), "duplicate ids across the inlined SVGs"
    for fig_id in PLOTS:
        assert page.figure(fig_id) is not None, fig_id
        assert len(page.in_figure(fig_id, "svg")) == 1 and page.in_figure(fig_id, "figcaption"), fig_id
        assert len(page.in_figure(fig_id, "path")) > 20, fig_id  # axes, ticks and the data
    words = " ".join(page.text)
    assert "The check projected this machine (track here)" in words
    assert "demo on default" in words and "HTML report" not in words


def _render(page: Path, tmp: Path) -> tuple[str, Image.Image]:
    """PAGE as headless Chromium draws it: the DOM after its inline script ran, and a screenshot.
    Host resolution is off, so a page that needed the network would show it."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the browser checks need it")
    png = tmp / "page.png"
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--force-device-scale-factor=1", "--window-size=1280,6000",
             "--virtual-time-budget=2000"]
    url = page.resolve().as_uri()
    dom = subprocess.run([*flags, f"--user-data-dir={tmp / 'p1'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0 and "<figure" in dom.stdout, dom.stderr[-2000:]
    shot = subprocess.run([*flags, f"--user-data-dir={tmp / 'p2'}", f"--screenshot={png}", url],
                          capture_output=True, text=True, timeout=60)
    assert shot.returncode == 0 and png.is_file(), shot.stderr[-2000:]
    return dom.stdout, Image.open(png).convert("RGB")


@pytest.fixture(scope="module")
def browser(report, tmp_path_factory) -> tuple[str, Image.Image]:
    return _render(report, tmp_path_factory.mktemp("chromium"))


def _drawn(page: "Page", image: Image.Image, fig_id: str, orange: bool) -> None:
    """The figure was laid out by the browser, holds a drawing, and its pixels show the series."""
    fig = page.figure(fig_id)
    assert fig is not None and "data-rendered" in fig, (fig_id, fig)  # the inline script ran
    w, h = map(int, fig["data-rendered"].split("x"))
    assert w > 300 and h > 100, (fig_id, fig["data-rendered"])
    assert int(fig["data-paths"]) > 20, fig_id
    x, y, bw, bh = map(int, fig["data-box"].split(","))
    assert y + bh <= image.height, f"{fig_id} below the screenshot"
    colours = image.crop((x, y, x + bw, y + bh)).getcolors(maxcolors=1 << 20)
    assert len(colours) > 50, (fig_id, len(colours))
    counts = {c: n for n, c in colours}
    assert counts.get(BLUE, 0) > 30, (fig_id, counts.get(BLUE, 0))
    if orange:
        assert counts.get(ORANGE, 0) > 30, (fig_id, counts.get(ORANGE, 0))


def test_every_plot_is_drawn_by_a_browser(browser):
    dom, image = browser
    page = Page(dom)
    for fig_id in PLOTS:
        _drawn(page, image, fig_id, orange=fig_id in ("plot-throughput", "plot-score-budget", "plot-predicted"))
    whole = image.getcolors(maxcolors=1 << 22)
    assert len(whole) > 200


def test_missing_results_json_is_one_line_naming_the_file(tmp_path, run_and_check):
    res = runner.invoke(app, ["report", str(tmp_path), "--html"])
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert lines[0].startswith("error: ") and str(tmp_path / "results.json") in lines[0]
    assert not (tmp_path / "report.html").exists()

    out, _ = run_and_check
    res = runner.invoke(app, ["report", str(out), "--prediction", str(tmp_path)])
    assert res.exit_code == 2 and f"{tmp_path / 'check.json'}: no check.json here" in res.output, res.output
    res = runner.invoke(app, ["report", str(out), "--budgets", "5m,0"])
    assert res.exit_code == 2 and "--budgets" in res.output, res.output


def _copy_run(out: Path, dest: Path, edit) -> Path:
    shutil.copytree(out, dest)
    results = json.loads((dest / "results.json").read_text())
    edit(results)
    (dest / "results.json").write_text(json.dumps(results))
    return dest


def test_older_results_without_timeline_still_render(run_and_check, tmp_path):
    out, _ = run_and_check
    hostile = '<script>alert("x")</script> $\\frac{$ & co'  # run names come from untrusted input
    old = _copy_run(out, tmp_path / "old", lambda r: (r.pop("timeline"), r["runs"][0].update(name=hostile)))
    res = runner.invoke(app, ["report", str(old), "--html"])
    assert res.exit_code == 0, res.output
    text = (old / "report.html").read_text()
    page = Page(text)
    assert page.figure("plot-memory") is None
    assert "No telemetry timeline in results.json" in " ".join(page.text)
    for fig_id in ("plot-throughput", "plot-time-per-run", "plot-score-budget"):
        assert page.figure(fig_id) is not None and len(page.in_figure(fig_id, "path")) > 20, fig_id
    assert '<script>alert("x")' not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    assert sum(1 for t, _, _ in page.tags if t == "script") == 1  # only the report's own


def test_a_replay_that_cannot_run_is_one_line_in_its_section(run_and_check, tmp_path):
    out, _ = run_and_check
    bare = _copy_run(out, tmp_path / "bare", lambda r: None)
    (bare / "run_config.json").unlink()
    path = write_html_report(bare, budgets=[0.01, 1.0])
    page = Page(path.read_text())
    assert page.figure("plot-score-budget") is None and page.figure("plot-time-per-run") is not None
    error = next(a for t, a, _ in page.tags if a.get("id") == "error-score-budget")
    assert error is not None and f"{bare / 'run_config.json'}: missing" in " ".join(page.text)


def test_check_html_draws_the_projection_and_the_memory_fit(run_and_check, tmp_path):
    """`effbench check --html`'s page (issue 18): the groups against the budget (orange line) and
    the memory parts against the card, drawn by a real browser."""
    from effbench.report.html_check import write_check_html

    _, chk = run_and_check
    page = write_check_html(chk, tmp_path / "check.html")
    check = json.loads((chk / "check.json").read_text())
    dom, image = _render(page, tmp_path)
    parsed = Page(dom)
    for fig_id in ("plot-projection", "plot-memory-fit"):
        _drawn(parsed, image, fig_id, orange=True)
    assert check["verdict"] in dom and "whole suite" not in check["runs"][0]["name"]
