"""The ``collector`` command line: the only place errors become words and exit codes.

Exit codes: 0 every unit collected; 1 the run finished but some units failed; 2 usage or
configuration error; 3 the run could not finish (output could not be written, internal error);
130/143 stopped by SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeAlias

import anyio

from collector import __version__
from collector.errors import CollectorError, ConfigError
from collector.logs import configure
from collector.run import EXIT_FATAL, EXIT_OK, EXIT_SIGINT, EXIT_USAGE

_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str) -> float:
    """Seconds from "45m", "1h30m", "90s" or "90"."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (examples: 45m, 1h30m, 90s, 90)"
        )
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than zero")
    return total


def _loopback(text: str) -> str:
    try:
        loopback = text == "localhost" or ipaddress.ip_address(text).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the simulator listens on loopback only (127.0.0.1, ::1, localhost)"
        )
    return text


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535)")
    return value


def _fault_rate(text: str) -> tuple[int, float]:
    status, sep, rate = text.partition("=")
    try:
        code, probability = int(status), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not STATUS=RATE, e.g. 503=0.2") from None
    if not sep or code not in (429, 500, 502, 503, 504) or not 0 <= probability <= 1:
        raise argparse.ArgumentTypeError(
            f"{text!r}: STATUS is one of 429, 500, 502, 503, 504 and RATE is in [0, 1]"
        )
    return code, probability


def _region_status(text: str) -> tuple[str, int]:
    region, sep, status = text.partition("=")
    if not sep or not region or not status.isdigit() or not 400 <= int(status) <= 599:
        raise argparse.ArgumentTypeError(f"{text!r} is not REGION=STATUS, e.g. cn-north-4=503")
    return region, int(status)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 1")
    return value


def _add_logging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="log format on stderr (default: json unless stderr is a terminal)",
    )
    parser.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="lowest level logged (default: info)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collector",
        description=(
            "Export every GaussDB(DWS) cluster's upgrade history, across every project of every "
            "configured Huawei Cloud account, into JSONL files."
        ),
    )
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (see each --help)"
    )

    _add_run(sub)
    _add_others(sub)
    _add_simulate(sub)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"collector: {message}", file=sys.stderr)
    return code


def cmd_validate(args: argparse.Namespace) -> int:
    from collector.configload import load_config
    from collector.plan import render_plan

    config = load_config(args.config, environ=os.environ)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(render_plan(config))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from collector.configload import load_config
    from collector.metrics import check_metrics_path, crash_summary, write_metrics
    from collector.progress import Progress, progress_enabled
    from collector.run import RunResult, collect
    from collector.shards import parse_shard
    from collector.stats import RunStats

    configure(fmt=args.log_format, level=args.log_level)
    config = load_config(args.config, environ=os.environ)
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.concurrency is not None:
        config = dataclasses.replace(
            config, limits=dataclasses.replace(config.limits, concurrency=args.concurrency)
        )
    shard = parse_shard(args.shard, shards=args.shards, environ=os.environ)
    if args.metrics_file is not None:
        check_metrics_path(args.metrics_file)  # fail now, not after a 45-minute run
    stats = RunStats()

    async def main() -> RunResult:
        return await collect(
            config,
            output_dir=args.output,
            deadline=args.deadline,
            handle_signals=True,
            resume=args.resume,
            overwrite=args.overwrite,
            break_lock=args.break_lock,
            shard=shard,
            since_run=args.since_run,
            stats=stats,
        )

    show = progress_enabled(
        sys.stderr, no_progress=args.no_progress, json_logs=args.log_format == "json"
    )
    started = datetime.now(UTC)
    with Progress(stats, stream=sys.stderr, enabled=show) as progress:
        # Log lines print above the live display, never inside it.
        configure(fmt=args.log_format, level=args.log_level, stream=progress.log_stream)
        try:
            result = anyio.run(main, backend="asyncio")
        except CollectorError:
            if args.metrics_file is not None:
                summary = crash_summary(
                    started_at=started, ended_at=datetime.now(UTC), exit_code=EXIT_FATAL
                )
                write_metrics(args.metrics_file, summary)
            raise
    if args.metrics_file is not None:
        write_metrics(args.metrics_file, result.summary)
    return result.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    from collector.report import build_report, parse_since
    from collector.reportview import render

    since = parse_since(args.since) if args.since is not None else None
    with build_report(args.dir, since=since, now=datetime.now(UTC)) as report:
        render(report, args.format, sys.stdout)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from collector.demo import check_against_truth, run_demo
    from collector.run import RunResult
    from collector.simulator.fleet import Fleet

    configure(fmt=args.log_format, level=args.log_level)

    async def main() -> tuple[RunResult, Fleet]:
        return await run_demo(output_dir=args.output)

    result, fleet = anyio.run(main, backend="asyncio")
    counts = result.summary["counts"]
    expected, _ = check_against_truth(fleet, result.output_dir)
    out = result.output_dir.resolve()
    print(f"collector demo: {result.summary['status']} in {result.summary['duration_s']} s")
    print(
        f"  {counts['projects']} projects, {counts['clusters']} clusters, "
        f"{counts['records']} records, {counts['requests']} requests"
    )
    print(f"  matches the simulator's ground truth: {expected} records")
    for name in ("records.jsonl", "clusters.jsonl", "errors.jsonl", "summary.json"):
        print(f"  {out / name}")
    return result.exit_code


def cmd_simulate(args: argparse.Namespace) -> int:
    from collector.simulator.faults import Faults
    from collector.simulator.fleet import Fleet
    from collector.simulator.server import describe, run_forever

    fleet = Fleet.generate(
        seed=args.seed,
        accounts=args.accounts,
        projects=args.projects,
        clusters=args.clusters,
        records=args.records,
        fixed_records=args.fixed_records,
    )
    faults = Faults(
        seed=args.seed,
        offset_mode=args.offset_mode,
        include_count=not args.no_count,
        page_cap=args.page_cap,
        latency=args.latency,
        latency_jitter=args.latency_jitter,
        error_rates=dict(args.error_rate),
        retry_after=args.retry_after,
        rate_limit=args.rate_limit,
        reset_rate=args.reset_rate,
        stall_rate=args.stall_rate,
        truncate_rate=args.truncate_rate,
        html_rate=args.html_rate,
        down_regions=set(args.down_region),
        region_status=dict(args.region_status),
    )

    def ready(url: str) -> None:
        print(describe(fleet, url), flush=True)

    try:
        run_forever(fleet, faults, host=args.host, port=args.port, on_ready=ready)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from exc
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
    except ConfigError as err:
        return _fail(f"config error: {err}", EXIT_USAGE)
    except CollectorError as err:
        return _fail(f"error: {err}", EXIT_FATAL)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_SIGINT)
    except AssertionError as err:
        return _fail(f"demo output does not match the simulator: {err}", EXIT_FATAL)
    return code


def _add_run(sub: _Subparsers) -> None:
    run = sub.add_parser(
        "run",
        help="collect the fleet described by a config file",
        description="Collect every cluster's upgrade records into the output directory.",
    )
    run.add_argument("--config", required=True, type=Path, help="path to the YAML config")
    run.add_argument("--output", type=Path, help="output directory (overrides output.dir)")
    run.add_argument(
        "--concurrency",
        type=_positive_int,
        help="requests in flight (overrides limits.concurrency)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="finish the interrupted run in the output directory (a fresh run if there is none)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="replace a finished run in the output directory"
    )
    run.add_argument(
        "--break-lock",
        action="store_true",
        help="take over a lock left by another host (only when that host is surely gone)",
    )
    run.add_argument(
        "--shard",
        metavar="K/N|auto",
        help="collect only shard K of N (0-based); auto: K from JOB_COMPLETION_INDEX",
    )
    run.add_argument(
        "--shards", type=_positive_int, metavar="N", help="how many shards, with --shard auto"
    )
    run.add_argument(
        "--since-run",
        type=Path,
        metavar="DIR",
        help="also write changes.jsonl against the earlier run in DIR",
    )
    run.add_argument(
        "--deadline",
        type=parse_duration,
        help="end the run by then (45m, 1h30m, 90s): publish what completed, list the rest",
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no live progress display on the terminal"
    )
    run.add_argument(
        "--metrics-file",
        type=Path,
        metavar="PATH",
        help="write Prometheus metrics here when the run ends (node_exporter textfile; *.prom)",
    )
    _add_logging(run)
    run.set_defaults(func=cmd_run)


def _add_others(sub: _Subparsers) -> None:
    report = sub.add_parser(
        "report",
        help="audit an export: versions, outcomes, failures, gaps",
        description="Read an export (any compression) and print the fleet view an auditor needs.",
    )
    report.add_argument("dir", type=Path, metavar="DIR", help="an export directory")
    report.add_argument(
        "--since",
        metavar="WINDOW",
        help="only upgrades in the last 12h, 30d, 2w (default: all history)",
    )
    report.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="output format (default: table)",
    )
    report.set_defaults(func=cmd_report)

    validate = sub.add_parser(
        "validate",
        help="check a config file and print the plan, secrets masked",
        description="Load and check the config, then print what a run would do.",
    )
    validate.add_argument("--config", required=True, type=Path, help="path to the YAML config")
    validate.set_defaults(func=cmd_validate)

    demo = sub.add_parser(
        "demo",
        help="run a real collection against the built-in simulator",
        description=(
            "Start the simulator on a free loopback port, collect its fleet with the production "
            "code path, and check the export against the simulator's ground truth."
        ),
    )
    demo.add_argument(
        "--output",
        type=Path,
        default=Path("demo-output"),
        help="where to write (default: ./demo-output)",
    )
    _add_logging(demo)
    demo.set_defaults(func=cmd_demo, log_level="warning")


def _add_simulate(sub: _Subparsers) -> None:
    simulate = sub.add_parser(
        "simulate",
        help="run the simulated IAM + DWS API as a standalone server",
        description="Serve a deterministic simulated fleet on loopback until interrupted.",
    )
    simulate.add_argument(
        "--host",
        type=_loopback,
        default="127.0.0.1",
        help="loopback address to bind (default: 127.0.0.1)",
    )
    simulate.add_argument("--port", type=_port, default=0, help="port (default: a free one)")
    simulate.add_argument("--seed", type=int, default=7, help="fleet seed (default: 7)")
    simulate.add_argument("--accounts", type=_positive_int, default=2, help="accounts (default: 2)")
    simulate.add_argument(
        "--projects", type=_positive_int, default=3, help="region projects per account (default: 3)"
    )
    simulate.add_argument(
        "--clusters", type=_non_negative_int, default=10, help="clusters per project (default: 10)"
    )
    simulate.add_argument(
        "--records", type=_non_negative_int, default=8, help="mean records per cluster (default: 8)"
    )
    simulate.add_argument(
        "--offset-mode", choices=("page", "record"), default="page", help="how offset is read"
    )
    simulate.add_argument("--no-count", action="store_true", help="omit 'count' from responses")
    simulate.add_argument("--page-cap", type=_positive_int, help="silently cap records per page")
    simulate.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    simulate.add_argument(
        "--latency-jitter", type=float, default=0.0, help="extra uniform random latency, seconds"
    )
    simulate.add_argument(
        "--error-rate",
        type=_fault_rate,
        action="append",
        default=[],
        metavar="STATUS=RATE",
        help="answer STATUS (429, 500, 502, 503, 504) to this share of requests; repeatable",
    )
    simulate.add_argument(
        "--retry-after", type=int, help="send Retry-After: N (seconds) with every 429"
    )
    simulate.add_argument(
        "--rate-limit", type=float, help="requests per second per access key and region (429 above)"
    )
    simulate.add_argument(
        "--reset-rate", type=_probability, default=0.0, help="share of connections reset"
    )
    simulate.add_argument(
        "--stall-rate", type=_probability, default=0.0, help="share of responses that stall"
    )
    simulate.add_argument(
        "--truncate-rate", type=_probability, default=0.0, help="share of bodies cut short"
    )
    simulate.add_argument(
        "--html-rate", type=_probability, default=0.0, help="share of 200s with an HTML body"
    )
    simulate.add_argument(
        "--down-region",
        action="append",
        default=[],
        metavar="REGION",
        help="every request for this region has its connection reset; repeatable",
    )
    simulate.add_argument(
        "--region-status",
        type=_region_status,
        action="append",
        default=[],
        metavar="REGION=STATUS",
        help="every request for REGION answers STATUS (e.g. cn-north-4=503); repeatable",
    )
    simulate.add_argument(
        "--fixed-records", action="store_true", help="every cluster has exactly --records records"
    )
    simulate.set_defaults(func=cmd_simulate)
