# ruff: noqa: RUF001  (the table and the plot are for people: the times and dash signs are meant)
"""The run's results as JSON, a markdown table and a PNG plot, all from the same records.

The plot draws the table's "ms/unit" column (cost per node, or per batch for
streaming) against the size, one line per runtime, so it shows what the table says.
The records and their JSON are ``records.py``'s; the targets' verdicts ``targets.py``'s.
"""

from __future__ import annotations

from pathlib import Path

from records import (
    CELERY,
    COST,
    DAGSTER,
    DISTRIBUTED,
    EMBEDDED,
    FLOOR,
    PREFECT,
    RATE,
    RUNTIMES,
    SERVICES,
    SHAPES,
    STORE_CEILING,
    Run,
    read_json,
    write_json,
)
from targets import targets


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or value != value:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}×"


def _usage(figures: dict[str, float]) -> tuple[str, str]:
    if "coordinator_cpu_s" in figures:
        cpu = f"{_fmt(figures['coordinator_cpu_s'])} / {_fmt(figures['worker_cpu_s'])}"
        rss = f"{_fmt(figures['coordinator_peak_rss_mb'])} / {_fmt(figures['worker_peak_rss_mb'])}"
        return cpu, rss
    if "server_cpu_s" in figures:  # Prefect: the flow's process, and the API server it started
        cpu = f"{_fmt(figures['process_cpu_s'])} + server {_fmt(figures['server_cpu_s'])}"
        rss = f"{_fmt(figures['process_peak_rss_mb'])} + server {_fmt(figures['server_peak_rss_mb'])}"
        return cpu, rss
    if "process_cpu_s" in figures:
        return _fmt(figures["process_cpu_s"]), _fmt(figures["process_peak_rss_mb"])
    if "worker_cpu_s" in figures:
        return f"– / {_fmt(figures['worker_cpu_s'])}", f"– / {_fmt(figures['worker_peak_rss_mb'])}"
    return "–", "–"


def shape_table(run: Run, shape: str) -> list[str]:
    cost, rate = COST[shape], RATE.get(shape)
    head = ["runtime", "N", cost.replace("_per_", "/"), *([rate.replace("_per_", "/")] if rate else [])]
    head += ["× asyncio floor", "CPU s (coord / worker)", "peak RSS MB (coord / worker)"]
    if shape == "chain":
        head += ["ready→running p50 / p99 ms", "ready→finished p50 / p99 ms"]
    if shape == "streaming":
        head += ["first→last batch s"]
    lines = [f"### {SHAPES[shape]}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for runtime in RUNTIMES:
        for size in run.sizes(shape):
            record = run.find(runtime, shape, size, failed=True)
            if record is None:
                continue
            if not record.ok:
                lines.append(f"| {runtime} | {size:,} | **{record.error}** |" + " |" * (len(head) - 3))
                continue
            f = record.figures
            floor = run.find(FLOOR, shape, size)
            times = f[cost] / floor.figures[cost] if floor and runtime != FLOOR else None
            cpu, rss = _usage(f)
            row = [runtime, f"{size:,}", _fmt(f.get(cost)), *([_fmt(f.get(rate))] if rate else [])]
            row += [_ratio(times), cpu, rss]
            if shape == "chain":
                row += [
                    *(
                        f"{_fmt(f[a])} / {_fmt(f[b])}" if a in f else "–"
                        for a, b in (
                            ("ready_running_p50_ms", "ready_running_p99_ms"),
                            ("ready_finished_p50_ms", "ready_finished_p99_ms"),
                        )
                    )
                ]
            if shape == "streaming":
                row += [_fmt(f.get("first_to_last_s"))]
            lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def store_ceiling_table(run: Run) -> list[str]:
    """What the MongoDB-protocol server alone writes per second of a no-op node's three
    document writes, and the fan-out ceiling that sets (``bench/store_ceiling.py``)."""
    record = run.find(SERVICES, STORE_CEILING, failed=True)
    if record is None:
        return []
    lines = [
        "### The store's ceiling at a no-op node's three writes (`bench/store_ceiling.py`)",
        "",
        "| measured alone (1,000 documents) | value |",
        "|---|---|",
    ]
    if not record.ok:
        return [*lines, f"| **{record.error}** | |", ""]
    lines += [f"| {name} | {value:,.0f} |" for name, value in record.figures.items()]
    return [*lines, ""]


def growth(run: Run) -> list[str]:
    """Cost per unit at twice the size over cost at the size: ≤ 1 means it grew no faster than the work."""
    lines = ["| shape | " + " | ".join(RUNTIMES) + " |", "|---|" + "---|" * len(RUNTIMES)]
    for shape in SHAPES:
        cells = []
        for runtime in RUNTIMES:
            sizes = sorted(r.size for r in run.records if r.runtime == runtime and r.shape == shape and r.ok)
            if len(sizes) < 2:
                cells.append("–")
                continue
            small, large = run.find(runtime, shape, sizes[0]), run.find(runtime, shape, sizes[-1])
            assert small and large
            ratio = large.figures[COST[shape]] / small.figures[COST[shape]]
            cells.append(f"{ratio:.2f} ({sizes[0]:,}→{sizes[-1]:,})")
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    return lines


def markdown(run: Run, plot_name: str) -> str:
    lines = [
        "# FlowKit benchmark results",
        "",
        f"- command: `{run.command}`",
        f"- date: {run.date}",
        f"- machine: {run.machine}",
        f"- load: {run.load}",
        "",
        f"![cost against size]({plot_name})",
        "",
        "Medians of the runs (asyncio floor, embedded, Celery, Prefect and Dagster: as many runs as "
        "`--repeat`; "
        "distributed: one run per size, each on fresh processes)"
        + (f"; each measurement had {run.timeout_sec:.0f} s to finish." if run.timeout_sec else "."),
        "",
    ]
    services = [r for r in run.records if r.runtime == SERVICES and r.shape != STORE_CEILING]
    if services:
        lines += ["### The services' floor", "", "| operation | p50 ms | p99 ms |", "|---|---|---|"]
        names = {"kafka": "Kafka produce → consume round trip", "mongo": "find_one_and_update"}
        for r in services:
            if not r.ok:
                lines.append(f"| {names[r.shape]} | **{r.error}** | |")
                continue
            lines.append(f"| {names[r.shape]} | {_fmt(r.figures['p50_ms'])} | {_fmt(r.figures['p99_ms'])} |")
        lines.append("")
    lines += store_ceiling_table(run)
    for shape in SHAPES:
        if run.sizes(shape):
            lines += shape_table(run, shape)
    lines += [
        "### Targets (ratios in this run)",
        "",
        "| target | measured | unit | met |",
        "|---|---|---|---|",
    ]
    for name, value, how, met in targets(run):
        verdict = "not judged" if met is None else "yes" if met else "**no**"
        lines.append(f"| {name} | {value} | {how} | {verdict} |")
    lines += ["", "### Growth: cost per unit at 2N over cost at N", "", *growth(run), ""]
    return "\n".join(lines)


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    styles = {
        FLOOR: "k:",
        EMBEDDED: "C0-",
        DISTRIBUTED: "C1-",
        CELERY: "C3--",
        PREFECT: "C4-.",
        DAGSTER: "C5-.",
    }
    for ax, shape in zip(axes.flat, SHAPES, strict=True):
        for runtime in RUNTIMES:
            points = sorted(
                (r.size, r.figures[COST[shape]])
                for r in run.records
                if r.runtime == runtime and r.shape == shape and r.ok
            )
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, styles[runtime], marker="o", label=runtime)
                for x, y in points:
                    ax.annotate(_fmt(y), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        kafka = run.find(SERVICES, "kafka")
        if shape == "chain" and kafka:
            ax.axhline(
                2 * kafka.figures["p50_ms"], color="C2", linestyle="-.", label="2 × Kafka round trip p50"
            )
        ax.set_title(SHAPES[shape], fontsize=9)
        ax.set_xlabel("N")
        ax.set_ylabel(COST[shape].replace("_per_", " per "))
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        failed = [r for r in run.records if r.shape == shape and not r.ok and r.runtime in RUNTIMES]
        if failed:  # the table says so; the plot must too
            text = "\n".join(f"{r.runtime} N={r.size:,}: not measured ({r.error[:60]})" for r in failed)
            ax.text(0.01, 0.01, text, fontsize=6, color="C3", transform=ax.transAxes, va="bottom")
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"Cost per unit against size (lower is better) — {run.date}, {run.machine}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(run: Run, directory: Path) -> dict[str, Path]:
    """results.json, results.md and results.png from the same records."""
    paths = {
        "json": write_json(run, directory),
        "md": directory / "results.md",
        "png": directory / "results.png",
    }
    plot(run, paths["png"])
    paths["md"].write_text(markdown(run, paths["png"].name))
    return paths


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python bench/report.py bench/results/results.json  (redraws results.md and .png)")
    source = Path(sys.argv[1])
    print(", ".join(str(p) for p in write(read_json(source), source.parent).values()))
