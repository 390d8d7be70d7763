"""Where results may go: safe sweep names, paths kept under ``--out``, an output folder checked up front.

A sweep's name becomes one folder under ``--out``; it must not climb out of it (``..``), hide
itself (``.x``, which pyarrow's dataset discovery skips) or exceed what a filesystem can name.
``--out`` is a local folder or any URI pyarrow knows (``s3://bucket/prefix``, ``gs://``, ``hdfs://``);
``filesystem`` opens it, with bounded timeouts and retries on S3, and ``check_remote`` probes a URI
before anything runs (README, "Results on object storage").
"""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
import sys
from typing import TYPE_CHECKING

from core.errors import UserError, shown

if TYPE_CHECKING:  # pyarrow is loaded where a filesystem is opened: planning a trial needs none
    import pyarrow.fs as pafs

NAME_MAX_CHARS = 100
NAME_PATTERN = rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{NAME_MAX_CHARS - 1}}}"
"""A sweep name: letters, digits, ``_``, ``.``, ``-``; it starts with a letter or digit (so never ``.``,
``..``, a hidden or an underscore name) and is at most ``NAME_MAX_CHARS`` characters."""

COMPONENT_MAX_BYTES = 255
PATH_MAX_BYTES = 4096


def check_name(name: object, field: str = "name") -> str:
    """``name`` if it is one safe path component (see ``NAME_PATTERN``), else UserError naming ``field``."""
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise UserError(
            f"{field}: must be 1 to {NAME_MAX_CHARS} characters of letters, digits, '_', '.', '-', "
            f"starting with a letter or digit (it names a folder under --out); got {shown(name)}"
        )
    return name


def inside(root: str, path: str) -> str:
    """``path`` normalised, if it lies strictly under ``root`` (both pyarrow paths); else UserError."""
    base = posixpath.normpath(root)
    target = posixpath.normpath(path)
    if not target.startswith(base.rstrip("/") + "/"):
        raise UserError(f"--out: refusing to touch '{path}', which lies outside the results folder '{root}'")
    return target


OBJECT_STORES = ("s3", "gcs")
"""pyarrow filesystems whose folders are key prefixes: an object appears whole when its upload
completes, renames are copies, and there is no exclusive create."""
S3_CONNECT_TIMEOUT_S = 3.0
S3_REQUEST_TIMEOUT_S = 60.0
S3_MAX_ATTEMPTS = 3
"""An S3 endpoint that does not answer fails a request after at most this many tries of these timeouts."""
REACH_TIMEOUT_S = 6.0
"""How long ``check_remote`` waits for a remote store to answer (bad input must fail within 10 s)."""


def is_remote(out: str) -> bool:
    """True for a URI other than ``file://`` (an object store, HDFS, ...), False for a local path."""
    return "://" in out and not out.startswith("file://")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the root path (no trailing ``/``) of a local path or any pyarrow URI.

    An ``s3://`` URI takes its endpoint, region and credentials as pyarrow does (the URI's query, such
    as ``?endpoint_override=host:port&scheme=http``, else ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), with the timeouts and tries above added, so an
    endpoint that stops answering fails a command instead of hanging it.
    """
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri if "://" in uri else os.path.abspath(uri))
    if fs.type_name == "s3":
        _, (options,) = fs.__reduce__()  # the options pyarrow parsed from the URI and the environment
        fs = pafs.S3FileSystem(
            **options | {"connect_timeout": S3_CONNECT_TIMEOUT_S, "request_timeout": S3_REQUEST_TIMEOUT_S},
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
        )
    return fs, path.rstrip("/") or path


def _probe(uri: str) -> None:
    """Exit (with the reason on stderr) unless pyarrow opens ``uri`` and its bucket exists; run in a child."""
    import pyarrow.fs as pafs

    try:
        fs, path = filesystem(uri)
    except Exception as err:
        sys.exit(
            f"pyarrow cannot open '{uri}' ({' '.join(str(err).split())}); allowed: a folder or a URI "
            f"pyarrow knows (s3://bucket/prefix, gs://bucket/prefix, hdfs://host/path, file:///path)"
        )
    bucket = fs.type_name in OBJECT_STORES
    where = path.split("/")[0] if bucket else path
    try:
        info = fs.get_file_info(where)
    except Exception as err:
        endpoint = fs.__reduce__()[1][0].get("endpoint_override") if fs.type_name == "s3" else ""
        at = f" at {endpoint or 'AWS'} (the URI's endpoint_override, else AWS_ENDPOINT_URL)" if bucket else ""
        sys.exit(f"cannot reach '{uri}'{at}: {' '.join(str(err).split())}")
    if bucket and info.type == pafs.FileType.NotFound:
        sys.exit(f"the bucket '{where}' of '{uri}' does not exist (create it first, or give an existing bucket)")
    if info.type == pafs.FileType.File or (path != where and fs.get_file_info(path).type == pafs.FileType.File):
        sys.exit(f"'{uri}' is a file, not a results folder")


_REACHED: set[str] = set()


def check_remote(uri: str, field: str = "--out", timeout_s: float = REACH_TIMEOUT_S) -> None:
    """UserError, on one line naming ``field``, unless pyarrow opens ``uri`` and its bucket answers in ``timeout_s``.

    The probe runs in a child process, so an endpoint that never answers (DNS, the SDK's retries)
    cannot hold this one past the deadline. A URI that answered once in this process is not probed again.
    """
    if uri in _REACHED:
        return
    code = f"from core.paths import _probe; _probe({uri!r})"
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise UserError(
            f"{field}: no answer from '{uri}' within {timeout_s:.0f} s (is the endpoint reachable? it is taken "
            "from the URI's endpoint_override, else AWS_ENDPOINT_URL)"
        ) from None
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"the probe of '{uri}' exited {done.returncode}"]
        raise UserError(f"{field}: {' '.join(lines[-1].split())}")
    _REACHED.add(uri)


def check_out(out: str, field: str = "--out") -> None:
    """Fail with UserError, before any trial runs and without writing, if results cannot go to ``out``.

    A local ``out`` must be a folder or not exist yet, with a writable folder above it and names a
    filesystem accepts; a URI must name a filesystem pyarrow knows, whose bucket exists and answers.
    Errors name ``field`` (``--out``, or ``DIR`` for a command taking the folder as its argument).
    """
    if not out or not out.strip():
        raise UserError(f"{field}: empty; give a folder or a pyarrow URI (s3://, gs://, hdfs://, file://)")
    if "\x00" in out:
        raise UserError(f"{field}: contains a NUL character")
    if is_remote(out):
        check_remote(out, field)  # known scheme, existing bucket, endpoint answering
        return
    local = os.path.abspath(out.removeprefix("file://"))
    if len(os.fsencode(local)) > PATH_MAX_BYTES:
        raise UserError(f"{field}: path longer than {PATH_MAX_BYTES} bytes")
    for part in local.split(os.sep):
        if len(os.fsencode(part)) > COMPONENT_MAX_BYTES:
            raise UserError(f"{field}: the name '{part[:40]}...' is longer than {COMPONENT_MAX_BYTES} bytes")
    if os.path.exists(local) and not os.path.isdir(local):
        raise UserError(f"{field}: '{out}' exists and is not a folder")
    parent = local
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{field}: cannot make '{out}': '{parent}' is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise UserError(f"{field}: cannot write under '{parent}' (read-only or no permission)")
