"""``deeperbench submit / status / logs``: a sweep as a Ray job, through Ray's Jobs API."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from core.errors import UserError
from harness.spec import load_specs

PROJECT = Path(__file__).resolve().parents[1]
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", "*.egg-info"]


def _answers_http(address: str, timeout_s: float = 5.0) -> None:
    """UserError within ``timeout_s`` unless an HTTP server answers at ``address`` (the client has no timeout)."""
    import http.client
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # something speaks HTTP there; the client says whether it is a Ray dashboard
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"--address: no Ray dashboard answers at '{address}' ({reason})") from None


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        raise UserError(f"--address: the Jobs API needs the dashboard's URL, e.g. http://HEAD:8265; got '{address}'")
    _answers_http(address)
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise UserError(
            f"--address: no Ray dashboard answers at '{address}': {' '.join(str(err).split())[:200]}"
        ) from None


def quote_out(out: str) -> str:
    """``out`` as one shell word; a leading ``$HOME/`` or ``~/`` is left for the cluster's shell to expand."""
    for prefix in ("$HOME/", "${HOME}/", "~/"):
        if out.startswith(prefix):
            return '"$HOME"/' + shlex.quote(out[len(prefix) :])
    return shlex.quote(out)


def entrypoint(python: str, spec: str, out: str, extra: list[str] | None = None) -> str:
    """The job's shell command: every argument quoted, so no metacharacter in them is run on the cluster."""
    args = [python, "-m", "harness.cli", "run", spec, *(extra or [])]
    return f"{' '.join(shlex.quote(a) for a in args)} --out {quote_out(out)}"


def submit(spec: str, address: str, out: str, *, python: str = "python", extra: list[str] | None = None) -> str:
    """Submit ``deeperbench run SPEC --out OUT`` as a Ray job with the project as working directory.

    The spec is validated here first; it must lie inside the project so that it travels with it.
    ``out`` is a path on the cluster (``$HOME`` is expanded there) or any pyarrow URI. Returns the job id.
    """
    load_specs(spec)
    path = Path(spec).resolve()
    if PROJECT not in path.parents:
        raise UserError(f"SPEC: '{spec}' must lie inside the project ({PROJECT}) to travel with it")
    relative = path.relative_to(PROJECT)
    client = _client(address)
    return client.submit_job(
        entrypoint=entrypoint(python, str(relative), out, extra),
        runtime_env={
            "working_dir": str(PROJECT),
            "excludes": EXCLUDES,
            "env_vars": {"RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "")},
        },
    )


def status(job_id: str, address: str) -> str:
    """The job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and message."""
    info = _client(address).get_job_info(job_id)
    return f"{info.status.value}{': ' + info.message if info.message else ''}"


def logs(job_id: str, address: str) -> str:
    """Everything the job printed so far."""
    return _client(address).get_job_logs(job_id)
