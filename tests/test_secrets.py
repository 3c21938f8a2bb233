"""Secrets never leave the process: not in logs (even at debug), errors, output files or reprs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

import orjson

from collector.configload import load_config
from collector.simulator.faults import ClusterFailure, Faults
from collector.simulator.fleet import Fleet
from collector.simulator.server import SimulatorThread

if TYPE_CHECKING:
    from conftest import CollectorCli


def fleet() -> Fleet:
    return Fleet.generate(seed=31, accounts=2, projects=2, clusters=3, records=6)


def secret_forms(sim_fleet: Fleet) -> dict[str, bytes]:
    """Every SK and security token, as is, URL-encoded both ways, and its first 16 characters."""
    forms: dict[str, bytes] = {}
    for account in sim_fleet.accounts:
        for kind, value in (("sk", account.sk), ("security_token", account.security_token)):
            if not value:
                continue
            label = f"{account.name}.{kind}"
            forms[label] = value.encode()
            forms[f"{label} (quote)"] = quote(value, safe="").encode()
            forms[f"{label} (quote_plus)"] = quote_plus(value).encode()
            forms[f"{label} (prefix)"] = value[:16].encode()
    return forms


def test_no_secret_reaches_any_output_of_a_faulty_debug_run(
    tmp_path: Path, cli: CollectorCli
) -> None:
    """A debug-level JSON-logged run through retries and failures leaks no SK or token anywhere."""
    sim_fleet = fleet()
    tokens = [a.security_token for a in sim_fleet.accounts if a.security_token]
    assert tokens, "the fleet must hold temporary credentials for the token check to mean much"
    forbidden = sim_fleet.accounts[0].projects[1]
    failing = sim_fleet.accounts[1].projects[0].clusters[1]
    faults = Faults(
        seed=5,
        error_rates={429: 0.05, 500: 0.05, 503: 0.05},
        reset_rate=0.03,
        truncate_rate=0.03,
        html_rate=0.03,
        forbidden_projects={forbidden.id},
        cluster_failures={failing.id: ClusterFailure(status=500)},
    )
    with SimulatorThread(sim_fleet, faults) as sim:
        config = cli.config(tmp_path / "cfg.yaml", sim_fleet, sim.url)
        out = tmp_path / "out"
        result = cli.run(
            "run",
            "--config",
            config,
            "--output",
            out,
            "--log-level",
            "debug",
            "--log-format",
            "json",
            cwd=tmp_path,
            env=cli.env(sim_fleet),
        )
    served = faults.stats.by_status

    # The run went through the faults: some units failed, requests were retried.
    assert result.returncode == 1, result.stderr
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["counts"]["retries"] > 0
    assert summary["counts"]["projects_failed"] >= 1
    assert summary["counts"]["clusters_failed"] >= 1
    assert served.get(500, 0) > 0
    assert served.get(403, 0) > 0
    # Debug logging was really on, so the debug events were searched too.
    events = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(event.get("level") == "debug" for event in events)

    haystacks: dict[str, bytes] = {
        "stdout": result.stdout.encode(),
        "stderr": result.stderr.encode(),
    }
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {"records.jsonl", "clusters.jsonl", "errors.jsonl", "summary.json"} <= {
        p.name for p in files
    }
    haystacks.update({str(p): p.read_bytes() for p in files})
    leaks = [
        f"{label} in {where}"
        for where, data in haystacks.items()
        for label, needle in secret_forms(sim_fleet).items()
        if needle in data
    ]
    assert leaks == []


def test_loaded_config_repr_hides_every_secret(tmp_path: Path, cli: CollectorCli) -> None:
    """repr() and str() of a loaded Config, its accounts and credentials show no SK or token."""
    sim_fleet = fleet()
    path = cli.config(tmp_path / "cfg.yaml", sim_fleet, "http://127.0.0.1:9")
    config = load_config(path, environ=cli.env(sim_fleet))

    # The secrets did load (so the check below is about hiding them, not about their absence).
    loaded = {a.name: a.credentials for a in config.accounts}
    for account in sim_fleet.accounts:
        assert loaded[account.name].sk.reveal() == account.sk
        token = loaded[account.name].security_token
        assert (token.reveal() if token else None) == account.security_token
    texts = [repr(config), str(config), *(repr(a) for a in config.accounts)]
    texts += [repr(a.credentials) for a in config.accounts]
    leaks = [
        label
        for label, needle in secret_forms(sim_fleet).items()
        if any(needle.decode() in text for text in texts)
    ]
    assert leaks == []
