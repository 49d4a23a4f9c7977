"""Writing outputs without losing anything: the one implementation every writer uses.

Rules (docs/reliability.md):

* An output never is, contains or lies inside one of the command's inputs
  (:func:`check_output`): ``--out D`` with ``--raw D`` is refused before anything is written.
* A directory we create carries a marker file (:data:`MARKER_FILE`, with its kind: prepared
  data, artifact, run). An existing output is replaced only when it is ours (that marker, or for
  folders written before markers existed the manifest the caller recognises) and only when the
  caller says so (``overwrite``, the CLI's ``--overwrite``/``--force``); a folder of other files
  is never emptied (:func:`check_replaceable`).
* Files and directories are written to a temporary sibling (``.tmp-<name>-<pid>-<random>``)
  and renamed onto the target, so a crash leaves either the old output or the new one, plus at
  worst a ``.tmp-*`` leftover, never a half-written output (:func:`atomic_file`,
  :func:`atomic_directory`).
* Two processes that may build the same output (parallel searches on a fresh cache) build it one
  at a time: :func:`output_lock` holds an OS file lock on a hidden sibling ``.<name>.lock``
  while it builds.
* An output's format follows its suffix; an unknown suffix is an error (:func:`output_format`).

Ground floor: imports nothing of rankmixer (checkpoints, artifacts, runs and prepared data all
come here).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MARKER_FILE", "OutputError", "atomic_directory", "atomic_file", "check_output", "check_replaceable",
    "fsync_dir", "fsync_file", "marker_kind", "output_format", "output_lock", "sha256_file", "unique_suffix",
    "write_json", "write_marker", "write_text_atomic",
]

# The ownership marker our writers put into every directory they create.
MARKER_FILE = ".rankmixer-output"


class OutputError(ValueError):
    """An output would destroy an input or files rankmixer did not write, or has an unknown
    format; the message names the path and what to do instead."""


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 4 MiB blocks (checkpoints and models can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---- small file-system helpers ----------------------------------------------------------------


def fsync_file(path: Path | str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path | str) -> None:
    """Make a rename inside ``path`` durable; skipped where the OS cannot (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unique_suffix() -> str:
    """A name suffix no other process or call picks (temp files beside their target)."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _temp_sibling(path: Path, keep_suffix: bool = False) -> Path:
    # Writers that pick a format by suffix (polars, pyarrow) still see the real one.
    return path.with_name(f".tmp-{path.name}-{unique_suffix()}{path.suffix if keep_suffix else ''}")


# ---- inputs vs outputs ------------------------------------------------------------------------


def _real(path: Path | str) -> Path:
    return Path(path).expanduser().resolve()


def check_output(output: Path | str, inputs: Iterable[Path | str | None], what: str = "output") -> None:
    """Refuse an ``output`` that is, contains or lies inside one of ``inputs`` (symlinks and
    hard links resolved), so that writing or replacing it can never touch what is read."""
    out = _real(output)
    for given in inputs:
        if given is None:
            continue
        src = _real(given)
        same = out == src
        if not same and out.exists() and src.exists():
            try:
                same = os.path.samefile(out, src)
            except OSError:
                pass
        if same:
            raise OutputError(f"{what} {output} is also an input ({given}): writing it would destroy the input; "
                              "choose another output path")
        if src.is_relative_to(out):
            raise OutputError(f"{what} {output} contains the input {given}: replacing it would destroy the input; "
                              "choose another output path")
        if out.is_relative_to(src):
            raise OutputError(f"{what} {output} lies inside the input {given}; choose an output outside it")


# ---- ownership --------------------------------------------------------------------------------


def write_marker(directory: Path | str, kind: str) -> None:
    """Mark ``directory`` as an output of ``kind`` written by rankmixer."""
    Path(directory, MARKER_FILE).write_text(json.dumps({"written_by": "rankmixer", "kind": kind}) + "\n")


def marker_kind(directory: Path | str) -> str | None:
    """The kind in ``directory``'s marker, or None when there is no (readable) marker."""
    try:
        doc = json.loads(Path(directory, MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(doc, dict) and doc.get("written_by") == "rankmixer" and isinstance(doc.get("kind"), str):
        return doc["kind"]
    return None


def _listing(path: Path, limit: int = 5) -> str:
    names = sorted(p.name for p in path.iterdir())
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def check_replaceable(
    path: Path | str,
    kind: str,
    overwrite: bool,
    *,
    legacy: Callable[[Path], bool] | None = None,
    flag: str = "--overwrite",
) -> bool:
    """Whether the output directory ``path`` already exists with content to be replaced.

    Missing or empty: False (nothing to replace). Ours (marker of ``kind``, or ``legacy(path)``
    for folders written before markers) and ``overwrite``: True. Anything else is an
    :class:`OutputError`: a file, a folder of someone else's files, or ours without ``flag``.
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise OutputError(f"{path} is a dangling symbolic link; remove it or choose another output")
    if not path.exists():
        return False
    if not path.is_dir():
        raise OutputError(f"{path} exists and is not a directory; refusing to replace it")
    if not any(path.iterdir()):
        return False
    found = marker_kind(path)
    ours = found == kind or (found is None and legacy is not None and legacy(path))
    if not ours:
        holds = f"rankmixer output of another kind ({found})" if found else \
            f"files rankmixer did not write ({_listing(path)})"
        raise OutputError(f"{path} already exists and holds {holds}; refusing to replace it: "
                          "choose another output path (or move those files away yourself)")
    if not overwrite:
        raise OutputError(f"{path} already holds rankmixer output ({kind}); pass {flag} to replace it")
    return True


def parquet_key_values(path: Path | str) -> dict[bytes, bytes]:
    """The file-level key-value metadata of a Parquet file (where Polars' and pyarrow's
    ``metadata=`` land; the Arrow schema's own metadata may not carry them), {} if unreadable."""
    import pyarrow.parquet as pq

    try:
        return dict(pq.ParquetFile(path).metadata.metadata or {})
    except (OSError, ValueError):
        return {}


TABLE_KEY = "rankmixer"  # the Parquet metadata key that tags a table file as one kind of our output


def check_table_output(path: Path | str, kind: str, inputs: Iterable[Path | str | None], overwrite: bool,
                       csv_header: Sequence[str] = ()) -> None:
    """Refuse to write the table file ``path`` (Parquet, or CSV by suffix) where it is one of
    ``inputs``, a directory, a file rankmixer did not write as ``kind`` (Parquet: its
    ``TABLE_KEY`` metadata; CSV: its first line is exactly ``csv_header``), or, without
    ``overwrite``, an earlier output of the same kind."""
    path = Path(path)
    check_output(path, inputs, f"{kind} output")
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise OutputError(f"{path} exists and is not a file; refusing to replace it")
    if path.suffix == ".csv":
        try:
            with open(path, "rb") as f:
                ours = bool(csv_header) and f.readline(4096).rstrip(b"\r\n") == ",".join(csv_header).encode()
        except OSError:
            ours = False
    else:
        ours = parquet_key_values(path).get(TABLE_KEY.encode()) == kind.encode()
    if not ours:
        raise OutputError(f"{path} exists and was not written by rankmixer as a {kind!r}; refusing to replace it")
    if not overwrite:
        raise OutputError(f"{path} exists; pass --overwrite to replace it (a {kind} rankmixer wrote)")


# ---- atomic writes ----------------------------------------------------------------------------


@contextmanager
def atomic_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (same suffix) to write; on success it is fsynced
    and renamed onto ``path`` in one step, on failure removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final, keep_suffix=True)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)


def write_text_atomic(path: Path | str, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, obj: object, inputs: Iterable[Path | str | None] = (), what: str = "JSON report") -> Path:
    """``obj`` as indented JSON in ``path``, atomically; ``path`` may not be, contain or lie
    inside one of ``inputs`` (the files the command read), so a report never replaces them."""
    check_output(path, inputs, what)
    write_text_atomic(path, json.dumps(obj, indent=2))
    return Path(path)


@contextmanager
def atomic_directory(
    path: Path | str,
    kind: str,
    *,
    overwrite: bool = False,
    legacy: Callable[[Path], bool] | None = None,
    flag: str = "--overwrite",
) -> Iterator[Path]:
    """Yield an empty temporary sibling directory to fill; on success it gets the ownership
    marker and takes ``path``'s place (an existing ``path`` must pass :func:`check_replaceable`,
    checked before and again just before the swap); on failure it is removed and ``path`` is
    untouched."""
    final = Path(path)
    check_replaceable(final, kind, overwrite, legacy=legacy, flag=flag)
    if final.is_symlink():  # replace the folder it points to (on its disk), not the link
        final = final.resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        write_marker(tmp, kind)
        fsync_dir(tmp)
        check_replaceable(final, kind, overwrite, legacy=legacy, flag=flag)  # nobody moved in meanwhile
        old = None
        if final.exists():
            # rename() cannot replace a non-empty directory: move the old one aside first.
            old = final.with_name(f".old-{final.name}-{unique_suffix()}")
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if old is not None:
                os.replace(old, final)
            raise
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def output_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive OS lock for building ``path``, blocking until other holders finish. The
    lock file is the hidden sibling ``.<name>.lock``, removed by its holder on release; a waiter
    that then wins the lock on the removed file sees that the name now points elsewhere (or
    nowhere) and locks again, so two holders never overlap. The caller checks again, once it
    holds the lock, whether the output is still to be built."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock = final.with_name(f".{final.name}.lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # before unlocking: waiters on this file then lock anew
        os.close(fd)


# ---- formats ----------------------------------------------------------------------------------


def output_format(path: Path | str, formats: Mapping[str, str], what: str = "output") -> str:
    """The format ``path``'s suffix names (``formats``: suffix -> format, e.g. ``{".csv":
    "csv"}``); any other suffix is an error rather than a file whose name lies about it."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        known = ", ".join(sorted(formats))
        raise OutputError(f"{what} {path}: the suffix {suffix or '(none)'!s} names no format rankmixer writes; "
                          f"use one of {known}")
    return formats[suffix]
