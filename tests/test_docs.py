"""The README's configuration reference names every key the loader accepts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from collector.config import HttpConfig, LimitsConfig, OutputConfig, PagingConfig, RetryConfig

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
EXAMPLE = (Path(__file__).parent.parent / "config.example.yaml").read_text(encoding="utf-8")


def test_every_section_key_is_documented_in_readme_and_example() -> None:
    """Each key of limits/http/retry/paging/output appears in the README table and the example."""
    missing = []
    for section, cls in (
        ("limits", LimitsConfig),
        ("http", HttpConfig),
        ("retry", RetryConfig),
        ("paging", PagingConfig),
        ("output", OutputConfig),
    ):
        for f in dataclasses.fields(cls):
            if f"`{section}.{f.name}`" not in README:
                missing.append(f"README: {section}.{f.name}")
            if f"{f.name}:" not in EXAMPLE:
                missing.append(f"config.example.yaml: {section}.{f.name}")
    assert missing == []
