"""A token for every job, so that a do-script's `obsflow upload` (and `obsflow locate`) works without anyone
putting a token in the scheduler's environment.

Each attempt gets a read-append token of its own, signed with the site's secret, for the account `job:<run id>`
(a name no real account can have: `:` is not allowed in account names). It expires when the job's time limit
does, plus an hour (a day and an hour for a job without one): an upload step of a finished job cannot be replayed
weeks later. The token lives in the job's environment and its wrapper script (readable by the scheduler's user and
the jobs' group only). An `OBSFLOW_TOKEN` in the scheduler's own environment wins: jobs then inherit that one.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.auth import Principal, Role, issue_token

JobTokens = Callable[[str, float | None], str]  # (run id, the job's timeout in seconds or None) -> token
SLACK_S = 3600.0
WITHOUT_TIMEOUT_S = 86400.0


def job_account(run_id: str) -> str:
    """The account name a job's token carries (the `uploader` of the files it uploads)."""
    return f"job:{run_id}"


def job_tokens(secret: str) -> JobTokens:
    """Issues each job's token with the site's secret."""

    def issue(run_id: str, timeout_s: float | None) -> str:
        ttl = (timeout_s if timeout_s is not None else WITHOUT_TIMEOUT_S) + SLACK_S
        return issue_token(secret, Principal(job_account(run_id), Role.READ_APPEND), ttl)

    return issue
