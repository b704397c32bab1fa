"""The pieces every section of the HTML report (effbench/report/html.py) shares: HTML escaping,
run names without the submission's suffix, and a matplotlib figure as an inline SVG <figure>.

The page must open offline and survive being mailed around, so a plot is a matplotlib figure
(object API, no pyplot or GUI backend) saved as SVG with text as glyph paths (no font needed),
its ids prefixed with the plot's own so that two plots in one page never share one."""

from __future__ import annotations

import html
import io
import re

import matplotlib
from matplotlib.figure import Figure

MIB = 2**20


def escape(value) -> str:
    return html.escape(str(value), quote=True)


def label(text: str) -> str:
    """Text for a matplotlib label: '$' would start mathtext (and a bad formula would raise)."""
    return text.replace("$", r"\$")


def short_name(run_name: str, submission: str) -> str:
    suffix = f"model=effbench_{submission}"
    return run_name.replace("," + suffix, "").replace(":" + suffix, "")


def _svg(fig: Figure, plot_id: str) -> str:
    """The figure as inline SVG: no XML prolog, no metadata, and ids prefixed with the plot's id,
    so that two plots in one page never share an id (clip paths, glyphs)."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": plot_id}):
        fig.savefig(buf, format="svg", bbox_inches="tight",
                    metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{plot_id}-{m.group(1)}"', svg)
    svg = re.sub(r'(href="#|url\(#)([^")]+)', lambda m: m.group(1) + (f"{plot_id}-{m.group(2)}" if m.group(2) in ids else m.group(2)), svg)
    return svg.replace("<svg ", f'<svg role="img" aria-labelledby="{plot_id}-caption" ', 1)


def figure(fig: Figure, plot_id: str, caption: str) -> str:
    return (f'<figure id="{plot_id}">{_svg(fig, plot_id)}'
            f'<figcaption id="{plot_id}-caption">{caption}</figcaption></figure>')


def new_figure(height: float = 3.6) -> tuple[Figure, object]:
    fig = Figure(figsize=(9.5, height), layout="constrained")
    return fig, fig.add_subplot()


def legend(fig: Figure, ax) -> None:
    """Above the plot, never over the data."""
    fig.legend(*ax.get_legend_handles_labels(), loc="outside upper center", ncols=4, frameon=False)
