"""Run-wide counters, shared by the client (requests) and the orchestrator (units).

Plain integers mutated from one event loop: no locks needed, and cheap on the hot path.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class RunStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    budget_exhausted: int = 0
    circuit_rejected: int = 0
    #: Requests set aside for a later pass.
    parked: int = 0
    passes: int = 1
    by_status: Counter[str] = field(default_factory=Counter)
    requests_by_endpoint: Counter[str] = field(default_factory=Counter)
    retries_by_endpoint: Counter[str] = field(default_factory=Counter)
    #: Failed units per endpoint (DWS region, or "iam"), to name where trouble is.
    failed_by_endpoint: Counter[str] = field(default_factory=Counter)
    accounts_failed: int = 0
    projects: int = 0
    projects_failed: int = 0
    projects_skipped: int = 0
    clusters: int = 0
    clusters_ok: int = 0
    clusters_failed: int = 0
    clusters_gone: int = 0
    clusters_reread: int = 0
    records: int = 0
    units_not_collected: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "accounts_failed": self.accounts_failed,
            "projects": self.projects,
            "projects_failed": self.projects_failed,
            "projects_skipped": self.projects_skipped,
            "clusters": self.clusters,
            "clusters_ok": self.clusters_ok,
            "clusters_failed": self.clusters_failed,
            "clusters_gone": self.clusters_gone,
            "clusters_reread": self.clusters_reread,
            "records": self.records,
            "units_not_collected": self.units_not_collected,
            "requests": self.requests,
            "retries": self.retries,
            "throttled": self.throttled,
            "retry_budget_exhausted": self.budget_exhausted,
            "circuit_rejected": self.circuit_rejected,
            "requests_set_aside": self.parked,
            "passes": self.passes,
            "responses_by_status": dict(sorted(self.by_status.items())),
            "requests_by_endpoint": dict(sorted(self.requests_by_endpoint.items())),
            "retries_by_endpoint": dict(sorted(self.retries_by_endpoint.items())),
            "failed_by_endpoint": dict(sorted(self.failed_by_endpoint.items())),
        }
