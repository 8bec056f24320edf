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
    c12 = by_id.get("C12")
    if c12 is not None and c12.plots.get("fleet"):
        out += _c12_plots(c12.plots["fleet"])
    return out


def _c12_plots(f: dict[str, Any]) -> list[dict[str, str]]:
    """The fleet lab's topology with what each host held, and the per-host bar chart."""
    import matplotlib.pyplot as plt

    t, fl, cw, sw, ct = (f["topology"], f["fleet"], f["client_wall"], f["server_wall"],
                         f["conntrack"])
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.set_axis_off()
    ax.set(xlim=(0, 10), ylim=(0, 10))
    box = {"boxstyle": "round,pad=0.4", "fc": "#f6f8fa", "ec": "#57606a"}

    def rows(n: int) -> list[float]:
        return [8.5 - i * (7.0 / max(1, n - 1)) for i in range(n)] if n > 1 else [5.0]

    for (label, ip), y in zip(t["clients"].items(), rows(len(t["clients"])), strict=True):
        ax.annotate("", (4.1, 5.0), (1.9, y), arrowprops={"arrowstyle": "->", "color": "#1f6feb"})
        ax.text(1.0, y, f"{label} {ip}\nheld {fl['per_client'].get(label, 0):,}",
                ha="center", va="center", bbox=box, fontsize=7)
    for (label, ip), y in zip(t["servers"].items(), rows(len(t["servers"])), strict=True):
        ax.annotate("", (8.1, y), (5.9, 5.0), arrowprops={"arrowstyle": "->", "color": "#1a7f37"})
        ax.text(9.0, y, f"{label} {ip}\nheld {fl['per_server'].get(label, 0):,}",
                ha="center", va="center", bbox=box, fontsize=7)
    ax.text(5.0, 5.0, f"balancer\nVIP {t['vip']}:{t['port']}\nnftables DNAT\nconntrack "
            f"{ct['count'] or 0:,} / {ct['max'] or 0:,}", ha="center", va="center",
            bbox={**box, "fc": "#fff8c5"}, fontsize=7)
    host_ip = t["host_address"].partition("/")[0]
    ax.text(5.0, 9.3, f"host namespace {host_ip}: {sw['host']} directly (server wall)",
            ha="center", va="center", fontsize=7, color="#57606a")
    ax.set_title(f"C12: the fleet lab ({fl['clients']} clients, port range {cw['ports']:,} "
                 f"each; servers capped at {sw['cap']:,})", fontsize=9)
    out = [{"title": "The fleet lab's topology, with what each host held (C12)",
            "svg": _svg(fig)}]

    names = [f"{cw['host']}\nalone", f"{sw['host']}\nalone", *fl["per_client"],
             *fl["per_server"]]
    values = [cw["held"], sw["held"], *fl["per_client"].values(), *fl["per_server"].values()]
    colors = ["#1f6feb", "#1a7f37"] + ["#1f6feb"] * len(fl["per_client"]) + [
        "#1a7f37"] * len(fl["per_server"])
    fig, ax = plt.subplots()
    bars = ax.bar(names, values, color=colors)
    ax.bar_label(bars, [f"{v:,}" for v in values], fontsize=7)
    n_clients = len(fl["per_client"])
    client_x = [0, *range(2, 2 + n_clients)]
    server_x = [1, *range(2 + n_clients, len(names))]
    ax.hlines([cw["ports"]] * len(client_x), [x - 0.4 for x in client_x],
              [x + 0.4 for x in client_x], colors="#d1242f", linestyles="--",
              label=f"client wall: {cw['ports']:,} ports")
    ax.hlines([sw["cap"]] * len(server_x), [x - 0.4 for x in server_x],
              [x + 0.4 for x in server_x], colors="#9a6700", linestyles=":",
              label=f"server wall: --max-connections {sw['cap']:,}")
    ax.axvline(1.5, color="#d0d7de")
    ax.set(ylabel="connections held",
           title=f"C12: per host, alone and in the fleet ({fl['held']:,} held in all)")
    ax.set_ylim(0, 1.3 * max([*values, cw["ports"], sw["cap"]]))
    ax.legend(fontsize=7, loc="upper right", ncols=2)
    out.append({"title": "Connections per host against each host's wall (C12)",
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
