# ruff: noqa: RUF001  (the table is for people: the times signs are meant)
"""The issue's targets, judged from a run: each a ratio of two measured costs, or a figure.

:func:`targets` gives a row per target whose measurements this run made; a target
whose measurement did not finish is "not judged", with the reason.
"""

from __future__ import annotations

from records import CELERY, COST, DAGSTER, DISTRIBUTED, EMBEDDED, FLOOR, PREFECT, SERVICES, Run

Target = tuple[str, str, str, bool | None]
"""(target, measured, how, met); met is None where a measurement it needs did not finish."""


def _cost(run: Run, runtime: str, shape: str) -> float | None:
    record = run.find(runtime, shape)
    return record.figures[COST[shape]] if record else None


def _missing(run: Run, parts: list[tuple[str, str]]) -> str:
    """Why a target could not be judged: the first failed record among ``parts``."""
    for runtime, shape in parts:
        if run.find(runtime, shape) is None:
            failed = run.find(runtime, shape, failed=True)
            if failed is not None:
                return f"{runtime} {shape} N={failed.size:,}: {failed.error}"
    return ""


PEER_LEAD = 24.0
"""The lead over Prefect and Dagster the issue asks embedded to keep: this many times
faster per node, or more."""


def targets(run: Run) -> list[Target]:
    """(target, measured, how, met) for each target of the issue this run measured; met is
    None where a measurement it needs did not finish (the reason is in "how")."""
    out: list[Target] = []

    def add(
        name: str,
        value: float | None,
        limit: float,
        how: str,
        parts: list[tuple[str, str]],
        at_most: bool = True,
    ) -> None:
        if value is None:
            why = _missing(run, parts)
            if why:
                out.append((name, "not measured", why, None))
            return
        met = value <= limit if at_most else value >= limit
        out.append((name, f"{value:,.2f}", how, met))

    def over(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    for shape, limit, words in (
        ("chain", 5, "≤ 5×"),
        ("fan", 15, "within 15×"),
        ("streaming", 10, "within 10×"),
    ):
        add(
            f"embedded {shape} {words} floor",
            over(_cost(run, EMBEDDED, shape), _cost(run, FLOOR, shape)),
            limit,
            "× floor",
            [(EMBEDDED, shape), (FLOOR, shape)],
        )
    dist_chain = _cost(run, DISTRIBUTED, "chain")
    add(
        "distributed chain ≤ Celery's",
        over(dist_chain, _cost(run, CELERY, "chain")),
        1,
        "× Celery",
        [(DISTRIBUTED, "chain"), (CELERY, "chain")],
    )
    kafka = run.find(SERVICES, "kafka")
    add(
        "distributed chain ≤ 1.3× two Kafka round trips",
        over(dist_chain, 2 * kafka.figures["p50_ms"] if kafka else None),
        1.3,
        "× (2 × Kafka p50)",
        [(DISTRIBUTED, "chain"), (SERVICES, "kafka")],
    )
    add(
        "distributed fan-out ≥ 3× Celery's chord",
        over(_cost(run, CELERY, "fan"), _cost(run, DISTRIBUTED, "fan")),
        3,
        "× Celery (throughput)",
        [(DISTRIBUTED, "fan"), (CELERY, "fan")],
        at_most=False,
    )
    stream = run.find(DISTRIBUTED, "streaming")
    add(
        "distributed ≥ 1,000 batches/s",
        stream.figures["batches_per_s"] if stream else None,
        1000,
        "batches/s",
        [(DISTRIBUTED, "streaming")],
        at_most=False,
    )
    scales = sorted(
        (r for r in run.records if r.runtime == DISTRIBUTED and r.shape == "scale"), key=lambda r: r.size
    )
    if scales:
        biggest = next((r for r in reversed(scales) if r.ok), None)
        if biggest is None:
            out.append(
                (
                    "coordinator < 200 MB for 200 × 20",
                    "not measured",
                    _missing(run, [(DISTRIBUTED, "scale")]),
                    None,
                )
            )
        else:
            add(
                f"coordinator < 200 MB for 200 × 20 (measured at {biggest.size:,} × 20)",
                biggest.figures["coordinator_peak_rss_mb"],
                200,
                "MB peak RSS",
                [(DISTRIBUTED, "scale")],
            )
    return out + peer_lead(run)


def peer_lead(run: Run) -> list[Target]:
    """Prefect's and Dagster's cost per node over embedded's, on the chain and the fan at
    each size both ran: one row, met if every ratio is at least ``PEER_LEAD`` (missed if
    one is not, whatever did not finish); none unless this run measured embedded and a
    peer on the same shape and size."""
    cells, ratios, unjudged = [], [], []
    for peer in (PREFECT, DAGSTER):
        for shape in ("chain", "fan"):
            measured = []
            for size in run.sizes(shape):
                theirs = run.find(peer, shape, size, failed=True)
                mine = run.find(EMBEDDED, shape, size, failed=True)
                if theirs is None or mine is None:
                    continue
                if not (theirs.ok and mine.ok):
                    unjudged.append(f"{(mine if theirs.ok else theirs).runtime} {shape} N={size:,}")
                    continue
                ratios.append(theirs.figures[COST[shape]] / mine.figures[COST[shape]])
                measured.append((size, ratios[-1]))
            if measured:
                times = " / ".join(f"{ratio:.0f}×" for _, ratio in measured)
                cells.append(f"{peer} {shape} {times} (N={' / '.join(f'{n:,}' for n, _ in measured)})")
    if not cells and not unjudged:
        return []
    how = "× (peer ms/node ÷ embedded ms/node)"
    if unjudged:
        how += "; not measured: " + ", ".join(unjudged)
    met: bool | None = None if unjudged else True
    if ratios and min(ratios) < PEER_LEAD:
        met = False  # missed already, whatever did not finish
    name = f"embedded ≥ {PEER_LEAD:.0f}× faster per node than Prefect / Dagster"
    return [(name, "; ".join(cells) or "not measured", how, met)]
