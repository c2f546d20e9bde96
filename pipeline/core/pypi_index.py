"""One named file from a Python package index, the way pip finds it, with nothing executed.

Indexes are searched in pip's order: ``index-url`` (unless ``no-index``), each
``extra-index-url``, then each ``find-links`` location (a folder or an HTML page of links).
A project page is read through the simple API: PEP 691 JSON when the index offers it, else
the PEP 503 HTML page. The file is streamed to a temporary name, its sha256 compared with the
pin, and only then renamed into place: a file that differs never reaches its final name.
"""
from __future__ import annotations

import hashlib
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse
from urllib.request import url2pathname

from tqdm import tqdm

OPTION_NAMES = ("index_url", "extra_index_urls", "no_index", "find_links", "cert", "client_cert",
                "trusted_hosts", "proxy", "timeout", "retries")
PYPI = "https://pypi.org/simple"
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"


class FetchError(Exception):
    """The file could not be found or did not match its pin; the message says where it looked."""


def options_from_environment(env) -> dict:
    """pip's options from ``PIP_*`` variables alone (when pip itself cannot be asked)."""
    words = lambda key: (env.get(key) or "").split()
    return {"index_url": env.get("PIP_INDEX_URL") or PYPI, "extra_index_urls": words("PIP_EXTRA_INDEX_URL"),
            "no_index": env.get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on"),
            "find_links": words("PIP_FIND_LINKS"), "cert": env.get("PIP_CERT"),
            "client_cert": env.get("PIP_CLIENT_CERT"), "trusted_hosts": words("PIP_TRUSTED_HOST"),
            "proxy": env.get("PIP_PROXY"), "timeout": float(env.get("PIP_DEFAULT_TIMEOUT") or 15),
            "retries": int(env.get("PIP_RETRIES") or 5)}


def normalize(project: str) -> str:  # PEP 503
    return re.sub(r"[-_.]+", "-", project).lower()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def _from_html(page_url: str, html: str) -> dict[str, tuple[str, str | None]]:
    parser = _Links()
    parser.feed(html)
    files = {}
    for href in parser.hrefs:
        url = urljoin(page_url, href)
        base, _, fragment = url.partition("#")
        digest = fragment[len("sha256="):] if fragment.startswith("sha256=") else None
        files[unquote(base.rstrip("/").rsplit("/", 1)[-1])] = (base, digest)
    return files


def _from_json(page_url: str, page: dict) -> dict[str, tuple[str, str | None]]:
    return {f["filename"]: (urljoin(page_url, f["url"]), (f.get("hashes") or {}).get("sha256"))
            for f in page.get("files", [])}


def _is_local(location: str) -> bool:
    return urlparse(location).scheme in ("", "file")


def _local_path(location: str) -> Path:
    parsed = urlparse(location)
    return Path(url2pathname(parsed.path)) if parsed.scheme == "file" else Path(location)


def _safe_name(filename: str) -> bool:
    return filename not in ("", ".", "..") and "/" not in filename and "\\" not in filename


class Index:
    """The indexes named by pip's options (``pip_options()`` in fetch.py)."""

    def __init__(self, options: dict):
        self.options = options
        self._session = None

    def locations(self) -> list[tuple[str, str]]:
        """(kind, location) in pip's search order: kind is "index" or "find-links"."""
        o = self.options
        indexes = ([] if o.get("no_index") else [o.get("index_url") or PYPI]) + list(o.get("extra_index_urls") or [])
        return [("index", u) for u in indexes] + [("find-links", u) for u in o.get("find_links") or []]

    def session(self):
        if self._session is None:
            import requests
            from requests.adapters import HTTPAdapter
            from urllib3.util.retry import Retry

            s = requests.Session()
            retry = Retry(total=int(self.options.get("retries") or 0), backoff_factor=0.25,
                          status_forcelist=(500, 502, 503, 504))
            for prefix in ("http://", "https://"):
                s.mount(prefix, HTTPAdapter(max_retries=retry))
            s.verify = self.options.get("cert") or True
            s.cert = self.options.get("client_cert") or None
            if self.options.get("proxy"):
                s.proxies = {"http": self.options["proxy"], "https": self.options["proxy"]}
            self._session = s
        return self._session

    def _get(self, url: str, **kw):
        host = urlparse(url).hostname
        verify = False if host in (self.options.get("trusted_hosts") or []) else self.session().verify
        response = self.session().get(url, timeout=float(self.options.get("timeout") or 15), verify=verify, **kw)
        response.raise_for_status()
        return response

    def files(self, kind: str, location: str, project: str) -> dict[str, tuple[str, str | None]]:
        """{filename: (url or path, sha256 the index states or None)} at one location."""
        if kind == "index":
            location = location.rstrip("/") + f"/{normalize(project)}/"
        if _is_local(location):
            path = _local_path(location)
            if path.is_dir() and kind == "find-links":
                return {p.name: (str(p), None) for p in path.iterdir() if p.is_file()}
            page = path / "index.html" if path.is_dir() else path
            if not page.is_file():
                return {}
            return _from_html(page.as_uri(), page.read_text(encoding="utf-8", errors="replace"))
        response = self._get(location, headers={"Accept": JSON_ACCEPT})
        if "json" in response.headers.get("Content-Type", ""):
            return _from_json(response.url, response.json())
        return _from_html(response.url, response.text)

    def find(self, project: str, filename: str) -> list[tuple[str, str | None]]:
        """Every (url, stated sha256) offering ``filename``, in search order."""
        found, errors = [], []
        for kind, location in self.locations():
            try:
                hit = self.files(kind, location, project).get(filename)
            except Exception as err:  # an unreachable mirror must not hide the next one
                errors.append(f"{location}: {type(err).__name__}: {err}")
                continue
            if hit:
                found.append(hit)
        if not found:
            where = ", ".join(loc for _, loc in self.locations()) or "no index (no-index set, no find-links)"
            raise FetchError(f"{filename} is on none of the indexes searched ({where})"
                             + ("".join(f"\n  {e}" for e in errors)))
        return found

    def download(self, project: str, filename: str, sha256: str, target: Path) -> Path:
        """Fetch ``filename`` to ``target``; a file whose sha256 is not ``sha256`` is refused."""
        if not _safe_name(filename):
            raise FetchError(f"{filename!r} is not a plain file name")
        problems = []
        for url, stated in self.find(project, filename):
            if stated and stated != sha256:
                problems.append(f"{url}: the index states sha256 {stated}, the pin is {sha256}")
                continue
            part = target.with_name(f".{filename}.part-{os.getpid()}")
            try:
                got = self._copy(url, part)
            except Exception as err:  # network errors come in many types; try the next copy
                part.unlink(missing_ok=True)
                problems.append(f"{url}: {type(err).__name__}: {err}")
                continue
            if got != sha256:
                part.unlink(missing_ok=True)
                problems.append(f"{url}: downloaded file has sha256 {got}, the pin is {sha256}")
                continue
            os.replace(part, target)
            return target
        raise FetchError("refusing every copy found:\n  " + "\n  ".join(problems))

    def _copy(self, url: str, part: Path) -> str:
        """Stream ``url`` to ``part``; return the sha256 of what was written."""
        h = hashlib.sha256()
        with open(part, "wb") as out:
            if _is_local(url):
                with open(_local_path(url), "rb") as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
                return h.hexdigest()
            response = self._get(url, stream=True)
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=size, unit="B", unit_scale=True, desc=part.name.split(".part-")[0].lstrip("."),
                      disable=None, leave=False) as bar:
                for block in response.iter_content(1 << 20):
                    h.update(block)
                    out.write(block)
                    bar.update(len(block))
        return h.hexdigest()
