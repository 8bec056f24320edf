"""The HTML report: one self-contained file (inline CSS and SVG plots), readable offline.

Templating is Jinja2 (autoescaped); plots are matplotlib figures rendered to SVG text and
inlined, so the file needs no network and no sibling files.
"""

from __future__ import annotations

import io
from typing import Any

import jinja2

from tcpmax.lab.common import Verdict
from tcpmax.lab.runner import ProveReport

__all__ = ["plots_for", "render_html"]


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.find("<svg"):]


def plots_for(report: ProveReport) -> list[dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "figure.figsize": (6.4, 3.2)})
    out: list[dict[str, str]] = []
    by_id = {o.id: o for o in report.outcomes}
    c2 = by_id.get("C2")
    if c2 is not None and c2.plots.get("ramp"):
        t, n = zip(*c2.plots["ramp"], strict=True)
        fig, ax = plt.subplots()
        ax.plot(t, n, color="#1f6feb")
        ax.axhline(65_535, color="#d1242f", linestyle="--", label="65,535")
        ax.set(xlabel="seconds", ylabel="connections established",
               title="C2: the ramp to one port")
        ax.legend()
        out.append({"title": "Ramp: connections established over time (C2)", "svg": _svg(fig)})
    if c2 is not None and c2.plots.get("memory"):
        samples = c2.plots["memory"]
        # The ramp only: after the peak, connections close faster than slab is returned.
        peak = max(range(len(samples)), key=lambda i: samples[i][0])
        conns, slab = zip(*samples[: peak + 1], strict=True)
        user = c2.plots.get("user_memory", {})
        fig, ax = plt.subplots()
        ax.plot(conns, [s / 2**20 for s in slab], marker=".", label="kernel (slab growth)")
        if conns:
            top = max(conns)
            ax.scatter([top, top], [user.get("serve", 0) / 2**20, user.get("load", 0) / 2**20],
                       color=["#1a7f37", "#9a6700"], zorder=3)
            ax.annotate(f"user: tcpmax serve {user.get('serve', 0) / 2**20:.1f} MiB, "
                        f"tcpmax load {user.get('load', 0) / 2**20:.1f} MiB",
                        (top, 0), textcoords="offset points", xytext=(-250, 12))
        ax.set(xlabel="connections held (both ends on this host)", ylabel="MiB",
               title="C2: memory against connections held")
        ax.legend(loc="upper left")
        out.append({"title": "Connections held against kernel and user memory (C2)",
                    "svg": _svg(fig)})
    for cid in ("C3", "C5"):
        o = by_id.get(cid)
        if o is None or not o.plots.get("per_source"):
            continue
        data = o.plots["per_source"]
        names = list(data["counts"])
        fig, ax = plt.subplots()
        ax.bar(names, [data["counts"][k] for k in names], color="#1f6feb")
        ax.axhline(data["range"], color="#d1242f", linestyle="--",
                   label=f"ports in range: {data['range']:,}")
        ax.set(ylabel="connections to one endpoint", title=f"{cid}: connections per source IP")
        ax.legend()
        out.append({"title": f"Connections per source IP against the port range ({cid})",
                    "svg": _svg(fig)})
    c9 = by_id.get("C9")
    if c9 is not None and c9.plots.get("backlog"):
        fig, ax = plt.subplots()
        for backlog, color in ((8, "#d1242f"), (4096, "#1a7f37")):
            runs = [r for r in c9.plots["backlog"] if r["backlog"] == backlog]
            ax.plot([r["burst"] for r in runs], [r["overflows"] for r in runs], marker="o",
                    color=color, label=f"backlog {backlog}: ListenOverflows")
            ax.plot([r["burst"] for r in runs], [r["burst"] - r["established"] for r in runs],
                    marker="x", linestyle=":", color=color,
                    label=f"backlog {backlog}: not established in 0.5 s")
        ax.set(xscale="log", xlabel="burst size (connects at once)", ylabel="count",
               title="C9: listen-queue overflows against burst size")
        ax.legend(fontsize=7)
        out.append({"title": "Listen-queue overflows against burst size (C9)",
                    "svg": _svg(fig)})
    return out


_TEMPLATE = jinja2.Environment(
    loader=jinja2.PackageLoader("tcpmax.lab", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]),
)


def render_html(report: ProveReport) -> str:
    colors = {Verdict.CONFIRMED: "#1a7f37", Verdict.REFUTED: "#d1242f",
              Verdict.INCONCLUSIVE: "#9a6700", Verdict.SKIPPED: "#57606a"}
    return _TEMPLATE.get_template("report.html.j2").render(
        report=report, counts=report.counts(), plots=plots_for(report),
        colors={k.value: v for k, v in colors.items()})
