"""Where results may go: safe sweep names, paths kept under ``--out``, an output folder checked up front.

A sweep's name becomes one folder under ``--out``; it must not climb out of it (``..``), hide
itself (``.x``, which pyarrow's dataset discovery skips) or exceed what a filesystem can name.
"""

from __future__ import annotations

import os
import posixpath
import re

from harness.errors import UserError, shown

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


def check_out(out: str) -> None:
    """Fail with UserError, before any trial runs and without writing, if results cannot go to ``out``.

    A local ``out`` must be a folder or not exist yet, with a writable folder above it and names a
    filesystem accepts; a URI must name a filesystem pyarrow knows.
    """
    if not out or not out.strip():
        raise UserError("--out: empty; give a folder or a pyarrow URI (s3://, gs://, hdfs://, file://)")
    if "\x00" in out:
        raise UserError("--out: contains a NUL character")
    if "://" in out and not out.startswith("file://"):
        from results.store import check_remote  # known scheme, existing bucket, endpoint answering

        check_remote(out)
        return
    local = os.path.abspath(out.removeprefix("file://"))
    if len(os.fsencode(local)) > PATH_MAX_BYTES:
        raise UserError(f"--out: path longer than {PATH_MAX_BYTES} bytes")
    for part in local.split(os.sep):
        if len(os.fsencode(part)) > COMPONENT_MAX_BYTES:
            raise UserError(f"--out: the name '{part[:40]}...' is longer than {COMPONENT_MAX_BYTES} bytes")
    if os.path.exists(local) and not os.path.isdir(local):
        raise UserError(f"--out: '{out}' exists and is not a folder")
    parent = local
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"--out: cannot make '{out}': '{parent}' is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise UserError(f"--out: cannot write under '{parent}' (read-only or no permission)")
