"""The ``collector`` command, run for real in a subprocess: exit codes, output, files, help."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from collector.cli import build_parser
from collector.demo import check_against_truth
from collector.simulator.faults import Faults
from collector.simulator.fleet import Fleet
from collector.simulator.server import SimulatorThread

if TYPE_CHECKING:
    from conftest import CollectorCli

OUTPUT_FILES = ("records.jsonl", "clusters.jsonl", "errors.jsonl", "summary.json")


def small_fleet() -> Fleet:
    return Fleet.generate(seed=23, accounts=2, projects=2, clusters=3, records=6)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def read_summary(directory: Path) -> dict[str, Any]:
    summary: dict[str, Any] = orjson.loads((directory / "summary.json").read_bytes())
    return summary


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- demo ----------------------------------------------------------------------------------


def test_demo_exports_the_demo_fleet_and_prints_the_four_files(
    tmp_path: Path, cli: CollectorCli
) -> None:
    """`collector demo` exits 0, lists its four files, and exports exactly the demo fleet."""
    result = cli.run("demo", "--output", "out", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    cli.assert_no_traceback(result)
    out = (tmp_path / "out").resolve()
    printed = [line.strip() for line in result.stdout.splitlines()]
    for name in OUTPUT_FILES:
        assert str(out / name) in printed
        assert (out / name).is_file()
    # The demo's fleet; the README describes it as 3 accounts, 9 region projects, 72 clusters.
    truth = Fleet.generate(seed=7, accounts=3, projects=3, clusters=8, records=6)
    assert (len(truth.accounts), truth.total_clusters) == (3, 72)
    assert sum(len(a.projects) for a in truth.accounts) == 9
    assert (out / "records.jsonl").read_bytes().count(b"\n") == truth.total_records
    expected, exported = check_against_truth(truth, out)
    assert expected == exported == truth.total_records
    assert read_summary(out)["status"] == "ok"


# -- run -----------------------------------------------------------------------------------


def test_run_exports_exactly_the_fleet_and_exits_0(tmp_path: Path, cli: CollectorCli) -> None:
    """`collector run` against the simulator writes every record of the fleet and says ok."""
    fleet = small_fleet()
    with SimulatorThread(fleet, Faults()) as sim:
        config = cli.config(tmp_path / "cfg.yaml", fleet, sim.url)
        result = cli.run(
            "run", "--config", config, "--output", "out", cwd=tmp_path, env=cli.env(fleet)
        )

    assert result.returncode == 0, result.stderr
    cli.assert_no_traceback(result)
    out = tmp_path / "out"
    expected, exported = check_against_truth(fleet, out)
    assert expected == exported == fleet.total_records
    summary = read_summary(out)
    assert summary["status"] == "ok"
    assert summary["exit_code"] == 0
    assert summary["counts"]["records"] == fleet.total_records
    assert summary["counts"]["clusters_ok"] == fleet.total_clusters
    assert (out / "errors.jsonl").read_bytes() == b""


def test_run_with_a_forbidden_project_exits_1_and_lists_the_project(
    tmp_path: Path, cli: CollectorCli
) -> None:
    """A 403 project is one line in errors.jsonl, exit 1, and every other cluster is exported."""
    fleet = small_fleet()
    forbidden = fleet.accounts[1].projects[0]
    with SimulatorThread(fleet, Faults(forbidden_projects={forbidden.id})) as sim:
        config = cli.config(tmp_path / "cfg.yaml", fleet, sim.url)
        result = cli.run(
            "run", "--config", config, "--output", "out", cwd=tmp_path, env=cli.env(fleet)
        )

    assert result.returncode == 1, result.stderr
    cli.assert_no_traceback(result)
    out = tmp_path / "out"
    errors = read_jsonl(out / "errors.jsonl")
    assert [(e["unit"], e["project_id"], e["account"], e["status"]) for e in errors] == [
        ("project", forbidden.id, fleet.accounts[1].name, 403)
    ]
    expected_ids = sorted(
        record["item_id"]
        for _account, project, cluster in fleet.iter_clusters()
        if project.id != forbidden.id
        for record in fleet.records(project.id, cluster.id)
    )
    assert sorted(r["item_id"] for r in read_jsonl(out / "records.jsonl")) == expected_ids
    summary = read_summary(out)
    assert (summary["status"], summary["exit_code"]) == ("partial", 1)
    assert summary["counts"]["projects_failed"] == 1


def test_unreachable_endpoint_finishes_with_exit_1_naming_each_account(
    tmp_path: Path, cli: CollectorCli
) -> None:
    """Nothing listens at the endpoint: files published, exit 1, each account with all its tries."""
    fleet = small_fleet()
    url = f"http://127.0.0.1:{closed_port()}"
    # 4 attempts in the first pass and 4 more in the one later pass; no breaker in the way.
    retry = {**cli.QUICK_RETRY, "max_attempts": 4, "passes": 1, "breaker_threshold": 100}
    extra = {"http": {"connect_timeout": 2, "read_timeout": 2}}
    config = cli.config(tmp_path / "cfg.yaml", fleet, url, retry=retry, extra=extra)
    result = cli.run("run", "--config", config, "--output", "out", cwd=tmp_path, env=cli.env(fleet))

    assert result.returncode == 1, result.stderr
    cli.assert_no_traceback(result)
    out = tmp_path / "out"
    errors = read_jsonl(out / "errors.jsonl")
    assert sorted(e["account"] for e in errors) == sorted(a.name for a in fleet.accounts)
    assert {(e["unit"], e["error"]) for e in errors} == {("account", "ConnectError")}
    summary = read_summary(out)
    assert summary["status"] == "partial"
    assert (out / "records.jsonl").read_bytes() == b""
    # One IAM request per account and nothing else to ask: each was tried 4 * (1 + 1) times,
    # and errors.jsonl's `attempts` counts every one of them, not just the last pass's.
    assert summary["counts"]["requests"] == len(fleet.accounts) * 4 * (1 + 1)
    assert [e["attempts"] for e in errors] == [4 * (1 + 1)] * len(fleet.accounts)


def test_unwritable_output_dir_exits_3_with_a_message_naming_it(
    tmp_path: Path, cli: CollectorCli
) -> None:
    """An output path beneath a regular file: exit 3, one message naming the path, no traceback."""
    fleet = small_fleet()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    config = cli.config(tmp_path / "cfg.yaml", fleet, f"http://127.0.0.1:{closed_port()}")
    result = cli.run(
        "run", "--config", config, "--output", blocker / "out", cwd=tmp_path, env=cli.env(fleet)
    )

    assert result.returncode == 3, result.stderr
    cli.assert_no_traceback(result)
    messages = [line for line in result.stderr.splitlines() if line.startswith("collector:")]
    assert len(messages) == 1, result.stderr
    assert str(blocker) in messages[0]
    assert blocker.read_text() == "not a directory\n"


# -- validate ------------------------------------------------------------------------------


def test_validate_prints_the_plan_without_secrets(tmp_path: Path, cli: CollectorCli) -> None:
    """`collector validate` names every account and region, exit 0, and shows no SK or token."""
    fleet = small_fleet()
    assert any(a.security_token for a in fleet.accounts)  # so the token check means something
    config = cli.config(tmp_path / "cfg.yaml", fleet, "http://127.0.0.1:9")
    result = cli.run("validate", "--config", config, cwd=tmp_path, env=cli.env(fleet))

    assert result.returncode == 0, result.stderr
    cli.assert_no_traceback(result)
    for account in fleet.accounts:
        assert account.name in result.stdout
        for project in account.projects:
            assert project.region in result.stdout
        for stream in (result.stdout, result.stderr):
            assert account.sk not in stream
            assert account.ak not in stream  # the plan shows only a prefix of the access key
            if account.security_token:
                assert account.security_token not in stream
    assert f"up to {cli.QUICK_RETRY['max_attempts']} attempts" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


# -- configuration and usage errors --------------------------------------------------------

_ENDPOINTS = "iam_endpoint: http://127.0.0.1:9\nendpoints: {cn-north-4: http://127.0.0.1:9}\n"
_ACCOUNT = "accounts:\n  - name: prod\n    ak: ${AK_0}\n    sk: ${SK_0}\n"
_ENV = {"AK_0": "AKAKAKAKAKAKAKAKAKAK", "SK_0": "SKSKSKSKSKSKSKSKSKSKSKSKSKSKSKSKSKSKSKSK"}


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        pytest.param(
            _ENDPOINTS
            + "accounts:\n  - name: prod\n    ak: ${COLLECTOR_TEST_NEVER_SET}\n    sk: ${SK_0}\n",
            ["COLLECTOR_TEST_NEVER_SET", "accounts[0].ak"],
            id="unset-variable",
        ),
        pytest.param(
            _ENDPOINTS + "accounts:\n  - name: prod\n    ak: ${AK_0}\n",
            ["accounts[0].sk"],
            id="missing-sk",
        ),
        pytest.param(
            _ENDPOINTS + _ACCOUNT + "    regoins: [cn-north-4]\n",
            ["accounts[0].regoins", "regions"],
            id="typo-account-key",
        ),
        pytest.param(
            # Line 4 is indented one space less than the mapping it belongs to.
            "accounts:\n  - name: prod\n    ak: ${AK_0}\n   sk: ${SK_0}\n",
            ["line 4"],
            id="invalid-yaml",
        ),
    ],
)
def test_config_error_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, cli: CollectorCli, text: str, needles: list[str]
) -> None:
    """A bad config file: exit 2, one stderr line naming the problem, no traceback, no files."""
    (tmp_path / "cfg.yaml").write_text(text)
    result = cli.run("run", "--config", "cfg.yaml", "--output", "out", cwd=tmp_path, env=_ENV)

    assert result.returncode == 2, result.stderr
    cli.assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]
    assert _ENV["SK_0"] not in result.stderr + result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


def test_missing_config_file_exits_2_naming_it(tmp_path: Path, cli: CollectorCli) -> None:
    """A config path that does not exist: exit 2, one line naming it, nothing written."""
    result = cli.run("run", "--config", "nope.yaml", "--output", "out", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    cli.assert_no_traceback(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "nope.yaml" in lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(["run", "--concurrency", "0"], "--concurrency", id="concurrency-0"),
        pytest.param(["run", "--frobnicate"], "--frobnicate", id="unknown-option"),
        pytest.param(["collect-everything"], "collect-everything", id="unknown-subcommand"),
        pytest.param(["simulate", "--port", "99999"], "--port", id="simulate-port-over-65535"),
    ],
)
def test_bad_flags_exit_2_without_traceback(
    tmp_path: Path, cli: CollectorCli, args: list[str], needle: str
) -> None:
    """Bad command-line usage: exit 2, the last stderr line names the problem, nothing written."""
    (tmp_path / "cfg.yaml").write_text(_ENDPOINTS + _ACCOUNT)
    if args[:1] == ["run"]:
        args = [*args, "--config", "cfg.yaml", "--output", "out"]
    result = cli.run(*args, cwd=tmp_path, env=_ENV)

    assert result.returncode == 2, result.stderr
    cli.assert_no_traceback(result)
    assert needle in result.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


def test_simulate_on_a_busy_port_fails_with_a_message_not_a_traceback(
    tmp_path: Path, cli: CollectorCli
) -> None:
    """`collector simulate --port N` with N taken: non-zero exit, one line naming the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli.run("simulate", "--port", str(port), cwd=tmp_path, timeout=30)

    assert result.returncode != 0
    cli.assert_no_traceback(result)
    messages = [line for line in result.stderr.splitlines() if line.startswith("collector:")]
    assert len(messages) == 1, result.stderr
    assert str(port) in messages[0]


# -- help ----------------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_prints_help(tmp_path: Path) -> None:
    """`collector --help` lists every subcommand; each `collector CMD --help` lists its options."""
    commands = _subcommands(build_parser())
    assert set(commands) >= {"run", "validate", "demo", "simulate"}  # the README's table
    argvs = [["--help"], *([name, "--help"] for name in commands)]
    procs = [  # side by side: each start-up costs the same
        subprocess.Popen(
            [sys.executable, "-m", "collector", *argv],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]

    for argv, proc, (stdout, stderr) in zip(argvs, procs, outputs, strict=True):
        assert proc.returncode == 0, (argv, stderr)
        assert stdout.startswith("usage: collector"), argv
        if argv == ["--help"]:
            for name in commands:
                assert name in stdout
            continue
        for action in commands[argv[0]]._actions:
            for option in action.option_strings:
                assert option in stdout, (argv, option)
    assert list(tmp_path.iterdir()) == []


def test_every_command_and_option_has_help_text() -> None:
    """No subcommand, option or positional of the parser is left without help text."""
    missing: list[str] = []

    def check(prog: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = "/".join(action.option_strings) or str(action.metavar or action.dest)
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{prog} {name}")
            if isinstance(action, argparse._SubParsersAction):
                described = {choice.dest: choice.help for choice in action._choices_actions}
                for sub_name, sub_parser in action.choices.items():
                    if not (described.get(sub_name) or "").strip():
                        missing.append(f"{prog} {sub_name} (subcommand)")
                    check(f"{prog} {sub_name}", sub_parser)

    check("collector", build_parser())
    assert missing == []
