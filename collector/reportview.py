"""Rendering a computed :class:`~collector.report.Report`: the ``collector report`` output.

One concern: turning what :func:`~collector.report.build_report` found into text, as an aligned
table for people, one JSON object, or one CSV with a ``section`` column. Nothing here reads an
export or counts anything; the long lists stream from the report's spools as they are written.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Final, Literal, TextIO

import orjson

from collector.errors import ConfigError
from collector.report import ClusterRow, FailedUpgrade, Report, since_text, utc_text

Format = Literal["table", "json", "csv"]
FORMATS: Final = ("table", "json", "csv")


def _window_label(report: Report) -> str:
    if report.window_start is None:
        return f"all history (up to {utc_text(report.now)})"
    return f"{utc_text(report.window_start)} .. {utc_text(report.now)} ({since_text(report.since)})"


def _info(report: Report) -> list[tuple[str, object]]:
    return [
        ("directory", str(report.directory)),
        ("run_id", report.run_id),
        # No summary.json: the run that wrote these files never finished.
        ("run_status", report.run_status or "unfinished (no summary.json)"),
        ("now", utc_text(report.now)),
        ("since", since_text(report.since)),
        ("window_start", utc_text(report.window_start)),
        ("clusters", report.clusters),
        ("records", report.records),
        ("undated_records", report.undated_records),
        ("clusters_without_inventory", report.clusters_without_inventory),
        ("duplicate_inventory_lines", report.duplicate_inventory_lines),
        ("uncollected_clusters", report.uncollected_clusters),
    ]


def render(report: Report, fmt: Format, out: TextIO) -> None:
    """Write ``report`` to ``out`` as a text table, one JSON object, or one CSV."""
    if fmt == "table":
        _render_table(report, out)
    elif fmt == "json":
        _render_json(report, out)
    elif fmt == "csv":
        _render_csv(report, out)
    else:
        raise ConfigError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")


def _cell(value: object) -> str:
    return "-" if value is None else str(value)


def _widths(rows: Iterable[FailedUpgrade | ClusterRow], columns: Sequence[str]) -> list[int]:
    """Each column's widest cell: a first pass over a spool, so tables align in any size."""
    widths = [0] * len(columns)
    for row in rows:
        for index, name in enumerate(columns):
            widths[index] = max(widths[index], len(_cell(getattr(row, name))))
    return widths


def _write_table(
    out: TextIO,
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    widths: Sequence[int],
    *,
    right: frozenset[int] = frozenset(),
) -> None:
    """Aligned columns; the last one is not padded (reasons are long and ragged)."""
    sizes = [max(len(h), w) for h, w in zip(headers, widths, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(size) if index in right else cell.ljust(size)
            for index, (cell, size) in enumerate(zip(cells[:-1], sizes, strict=False))
        ]
        parts.append(cells[-1].rjust(sizes[-1]) if len(cells) - 1 in right else cells[-1])
        return "  " + "  ".join(parts).rstrip() + "\n"

    out.write(line(headers))
    for row in rows:
        out.write(line([_cell(value) for value in row]))


def _render_table(report: Report, out: TextIO) -> None:
    out.write(f"Upgrade audit of {report.directory}\n")
    status = report.run_status or "UNFINISHED (no summary.json: the run did not finish)"
    out.write(f"  run {report.run_id or '-'}, status {status}\n")
    out.write(f"  {report.clusters:,} clusters in the inventory, {report.records:,} records\n")
    out.write(f"  window: {_window_label(report)}\n")
    if report.undated_records:
        out.write(f"  {report.undated_records:,} records have no time: outside any window\n")
    if report.clusters_without_inventory:
        out.write(
            f"  warning: {report.clusters_without_inventory:,} clusters have records but no"
            " inventory line\n"
        )

    out.write(f"\nClusters per current version ({len(report.versions)} versions)\n")
    _write_table(
        out,
        ("VERSION", "CLUSTERS"),
        report.versions,
        [max((len(v) for v, _ in report.versions), default=0), 8],
        right=frozenset({1}),
    )

    total = sum(n for _, n in report.outcomes)
    out.write(f"\nUpgrades per outcome in the window ({total:,})\n")
    _write_table(
        out,
        ("OUTCOME", "UPGRADES"),
        report.outcomes,
        [max(len(name) for name, _ in report.outcomes), 8],
        right=frozenset({1}),
    )

    failed = report.failed_upgrades
    out.write(f"\nFailed upgrades in the window ({len(failed):,})\n")
    if len(failed):
        columns: tuple[str, ...] = ("time", "account", "region", "cluster_name", "cluster_id")
        columns += ("item_id", "status", "to_version", "reason")
        _write_table(
            out,
            [name.upper() for name in columns],
            ([getattr(row, name) for name in columns] for row in failed),
            _widths(failed, columns),
        )

    for title, spool in (
        ("Clusters with no successful upgrade in the window", report.no_success_in_window),
        ("Clusters with no records at all", report.no_records),
    ):
        out.write(f"\n{title} ({len(spool):,})\n")
        if not len(spool):
            continue
        columns = ("account", "region", "cluster_name", "cluster_id", "version", "records")
        columns += ("collection",)
        _write_table(
            out,
            [name.upper() for name in columns],
            ([getattr(row, name) for name in columns] for row in spool),
            _widths(spool, columns),
            right=frozenset({5}),
        )
    if report.uncollected_clusters:
        out.write(
            f"  {report.uncollected_clusters:,} of these were not collected (collection failed):"
            " their history is unknown, not empty\n"
        )


def _render_json(report: Report, out: TextIO) -> None:
    # Written piece by piece, so the long lists stream from their spools.
    def dumps(obj: object) -> str:
        return orjson.dumps(obj).decode()

    info = dict(_info(report))
    out.write('{"export":' + dumps(info))
    out.write(
        ',"versions":'
        + dumps([{"version": v, "clusters": n} for v, n in report.versions])
        + ',"outcomes":'
        + dumps(dict(report.outcomes))
    )
    for key, spool in (
        ("failed_upgrades", report.failed_upgrades),
        ("no_success_in_window", report.no_success_in_window),
        ("no_records", report.no_records),
    ):
        out.write(f',"{key}":[')
        fields = spool.fields
        for number, row in enumerate(spool):
            if number:
                out.write(",")
            out.write(dumps({name: getattr(row, name) for name in fields}))
        out.write("]")
    out.write("}\n")


CSV_COLUMNS: Final = (
    "section",
    "key",
    "value",
    "time",
    "account",
    "region",
    "project_id",
    "cluster_id",
    "cluster_name",
    "item_id",
    "status",
    "from_version",
    "to_version",
    "version",
    "collection",
    "records",
    "reason",
)


def _render_csv(report: Report, out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for key, value in _info(report):
        writer.writerow({"section": "export", "key": key, "value": value})
    for version, count in report.versions:
        writer.writerow({"section": "version", "key": version, "value": count})
    for outcome, count in report.outcomes:
        writer.writerow({"section": "outcome", "key": outcome, "value": count})
    for section, spool in (
        ("failed_upgrade", report.failed_upgrades),
        ("no_success_in_window", report.no_success_in_window),
        ("no_records", report.no_records),
    ):
        fields = spool.fields
        for row in spool:
            values = {name: getattr(row, name) for name in fields}
            writer.writerow({"section": section, **values})
