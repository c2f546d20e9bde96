"""Zip-slip and tar-slip: members that would land outside the target refuse the whole archive."""
import stat
import tarfile
import zipfile

import pytest

from pipeline.core.errors import StageError
from pipeline.core.fetch import extract, unsafe_member
from tests.security.conftest import add_bytes


@pytest.mark.parametrize("name, link, hardlink, why", [
    ("pkg/data.txt", None, False, None),
    ("pkg/./data.txt", None, False, None),
    ("/etc/passwd", None, False, "an absolute path"),
    ("C:/Windows/evil.dll", None, False, "an absolute path"),
    ("pkg/../../evil", None, False, "a '..' component"),
    ("..\\evil", None, False, "a '..' component"),
    ("pkg/link", "../other/file", False, None),  # stays inside: pkg/../other/file
    ("pkg/link", "../../outside", False, "outside the target"),
    ("pkg/link", "/etc/passwd", False, "a link to the absolute path"),
    ("pkg/hard", "pkg/data.txt", True, None),
    ("pkg/hard", "../x", True, "outside the target"),
])
def test_unsafe_member(name, link, hardlink, why):
    got = unsafe_member(name, link, hardlink)
    assert (got is None) if why is None else (why in got), got


def _zip(path, entries):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def _zip_symlink(path, name, target):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/data.txt", b"ok")
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return path


@pytest.mark.parametrize("evil", ["../evil.txt", "pkg/../../evil.txt", "/tmp/evil-abs.txt"])
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path, evil):
    archive = _zip(tmp_path / "a.whl", [("pkg/data.txt", b"ok"), (evil, b"pwned")])
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(StageError, match=f"member '{evil}' is an? .*refusing to extract this archive"):
        extract(archive, ("*",), dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "deep" / "evil.txt").exists()


def test_zip_symlink_leaving_the_target_is_refused(tmp_path):
    with pytest.raises(StageError, match="'pkg/link' is a link to '../../etc'"):
        extract(_zip_symlink(tmp_path / "a.zip", "pkg/link", "../../etc"), ("pkg/*",), tmp_path / "d")


def test_zip_symlink_inside_the_target_is_not_read_as_data(tmp_path):
    archive = _zip_symlink(tmp_path / "a.zip", "pkg/link", "data.txt")
    assert extract(archive, ("pkg/data.txt",), tmp_path / "d") == ["pkg/data.txt"]
    with pytest.raises(StageError, match="'pkg/link' is a link, not a file of data"):
        extract(archive, ("pkg/*",), tmp_path / "e")


def _tar(path, build):
    with tarfile.open(path, "w:gz") as tf:
        add_bytes(tf, "pkg/data.txt", b"ok")
        build(tf)
    return path


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("build, message", [
    (lambda tf: add_bytes(tf, "../evil.txt", b"pwned"), "'../evil.txt' is a '..' component"),
    (lambda tf: add_bytes(tf, "/tmp/evil-abs.txt", b"pwned"), "'/tmp/evil-abs.txt' is an absolute path"),
    (lambda tf: tf.addfile(_link("pkg/etc", "/etc", tarfile.SYMTYPE)), "link to the absolute path '/etc'"),
    (lambda tf: tf.addfile(_link("pkg/up", "../../up", tarfile.SYMTYPE)), "'pkg/up' is a link to '../../up', outside"),
    (lambda tf: tf.addfile(_link("pkg/hard", "../outside", tarfile.LNKTYPE)), "'pkg/hard' is a link to '../outside'"),
])
def test_tar_slip_is_refused_and_nothing_is_written(tmp_path, build, message):
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(StageError, match=message):
        extract(_tar(tmp_path / "a.tar.gz", build), ("*",), dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "deep" / "evil.txt").exists()


def test_tar_link_or_device_matching_a_pattern_is_not_read_as_data(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", lambda tf: tf.addfile(_link("pkg/alias.txt", "data.txt", tarfile.SYMTYPE)))
    assert extract(archive, ("pkg/data.txt",), tmp_path / "d") == ["pkg/data.txt"]
    with pytest.raises(StageError, match="'pkg/alias.txt' is a link or device"):
        extract(archive, ("pkg/*.txt",), tmp_path / "e")
    fifo = tarfile.TarInfo("pkg/pipe.txt")
    fifo.type = tarfile.FIFOTYPE
    with pytest.raises(StageError, match="'pkg/pipe.txt' is a link or device"):
        extract(_tar(tmp_path / "b.tar.gz", lambda tf: tf.addfile(fifo)), ("pkg/*.txt",), tmp_path / "f")


def test_only_matching_regular_members_are_written(tmp_path):
    archive = _tar(tmp_path / "a.tar.gz", lambda tf: add_bytes(tf, "pkg/setup.py", b"import os"))
    assert extract(archive, ("pkg/*.txt",), tmp_path / "d") == ["pkg/data.txt"]
    assert [p.name for p in (tmp_path / "d" / "pkg").iterdir()] == ["data.txt"]
