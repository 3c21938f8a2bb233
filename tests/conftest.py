"""Shared fixtures: run the real ``collector`` command, with config files aimed at a simulator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.simulator.fleet import Fleet

#: What any Python traceback starts with.
TRACEBACK = "Traceback (most recent call last)"


class CollectorCli:
    """``python -m collector`` in a subprocess, and config files that point it at a simulator."""

    #: Retries that never make a test wait: tiny backoffs, no retry budget, one later pass now.
    QUICK_RETRY: Mapping[str, Any] = {
        "max_attempts": 4,
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
        "retry_after_max": 0.01,
        "budget_minimum": 1000,
        "passes": 1,
        "pass_delay": 0,
    }

    def run(
        self,
        *args: str | os.PathLike[str],
        cwd: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """``python -m collector ARGS`` in ``cwd``, with this process's environment plus ``env``."""
        return subprocess.run(
            [sys.executable, "-m", "collector", *map(str, args)],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @staticmethod
    def env(fleet: Fleet) -> dict[str, str]:
        """AK_n / SK_n / TOK_n for every account of ``fleet`` (TOK_n only when it has one)."""
        env: dict[str, str] = {}
        for index, account in enumerate(fleet.accounts):
            env[f"AK_{index}"] = account.ak
            env[f"SK_{index}"] = account.sk
            if account.security_token:
                env[f"TOK_{index}"] = account.security_token
        return env

    def config(
        self,
        path: Path,
        fleet: Fleet,
        url: str,
        *,
        retry: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write a config naming every account of ``fleet``, all endpoints at ``url``."""
        regions = sorted({p.region for a in fleet.accounts for p in a.projects})
        doc: dict[str, Any] = {
            "iam_endpoint": url,
            "endpoints": dict.fromkeys(regions, url),
            "accounts": [
                {
                    "name": account.name,
                    "ak": f"${{AK_{index}}}",
                    "sk": f"${{SK_{index}}}",
                    "security_token": f"${{TOK_{index}:-}}",
                }
                for index, account in enumerate(fleet.accounts)
            ],
            "retry": dict(retry if retry is not None else self.QUICK_RETRY),
            **(extra or {}),
        }
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    @staticmethod
    def assert_no_traceback(result: subprocess.CompletedProcess[str]) -> None:
        assert TRACEBACK not in result.stdout, result.stdout
        assert TRACEBACK not in result.stderr, result.stderr


@pytest.fixture
def cli() -> CollectorCli:
    """Runs the real console entry point (``python -m collector``) in a subprocess."""
    return CollectorCli()
