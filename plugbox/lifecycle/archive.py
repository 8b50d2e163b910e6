"""Installing a plugin from an uploaded zip: every member checked and the manifest validated before a
byte is written; extraction into a hidden temp dir inside the plugins dir (so the final rename stays on
one filesystem and is atomic; `discover` skips dot-directories); then rename, or on update an atomic
directory swap (Linux `renameat2(RENAME_EXCHANGE)`, two renames elsewhere).

Refused (ZipRefused, naming the member): path escape (`..`, absolute, drive letters, backslashes),
NUL or control characters in a name (zipfile silently cuts a name at its first NUL: the raw name is
checked), names that are not UTF-8, a path component past 255 bytes or a path deeper than
`install_max_depth`, two members that land on the same path (or a file where another member needs a
directory), symlinks, device files, FIFOs and sockets (from the Unix mode in `external_attr`),
compression methods other than stored/deflated, encrypted members, more than `install_max_files`
members, declared or actual uncompressed size past `install_unpacked_max_bytes` (zip bombs: sizes
are counted while decompressing, not trusted from the header), a member whose size/compressed size
ratio is past `install_max_ratio`, a corrupt or truncated archive (found while extracting: the
caller removes the staging directory), a missing, oversized or non-JSON manifest, a `main` absent
from the archive. The zip may hold the plugin at its root or inside one top-level directory.

Pure file work, blocking (callers run it in a thread); `plugbox.lifecycle.install` drives the
manager around it (disable, swap, reload, re-enable).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import posixpath
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from plugbox import __version__
from plugbox.errors import ManifestError, ZipRefused
from plugbox.manifest import MANIFEST_MAX_BYTES, Manifest, parse_manifest

__all__ = ["Archive", "ZipLimits", "check_archive", "exchange", "extract"]

MANIFEST = "manifest.json"
_CHUNK = 64 * 1024
_ALLOWED_TYPES = (0, stat.S_IFREG, stat.S_IFDIR)  # 0: no Unix mode recorded (Windows zips)
_ALLOWED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_UTF8_FLAG = 0x800  # general purpose bit 11: the name is UTF-8 (else CP437, which we refuse past ASCII)
_NAME_MAX = 255  # bytes per path component (Linux NAME_MAX); longer fails at open() as ENAMETOOLONG
_RATIO_FLOOR = 1 << 20  # members smaller than this are never refused for their ratio alone
# What extraction can raise on a damaged archive (bad CRC, truncated stream, bad deflate data).
_CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)


@dataclass(frozen=True, slots=True)
class ZipLimits:
    """The installer's limits (from `plugbox.settings.Settings.install_*`)."""

    max_files: int
    max_unpacked: int
    max_depth: int
    max_ratio: int


@dataclass(frozen=True, slots=True)
class Archive:
    manifest: Manifest
    root: str  # "" or "dir/": the prefix stripped from every member
    members: tuple[zipfile.ZipInfo, ...]


def _check_name(info: zipfile.ZipInfo, max_depth: int) -> None:
    name = info.orig_filename  # `filename` is cut at the first NUL by zipfile
    if "\x00" in name:
        raise ZipRefused(f"zip member {name!r}: NUL is not allowed in names")
    if not info.flag_bits & _UTF8_FLAG and not name.isascii():
        raise ZipRefused(f"zip member {name!r}: the name is not UTF-8 (set the zip's UTF-8 name flag)")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ZipRefused(f"zip member {name!r}: control characters are not allowed in names")
    if "\\" in name:
        raise ZipRefused(f"zip member {name!r}: backslashes are not allowed in paths")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ZipRefused(f"zip member {name!r}: absolute paths are not allowed")
    parts = name.rstrip("/").split("/")
    if any(p == ".." for p in parts):
        raise ZipRefused(f"zip member {name!r}: '..' would escape the plugin directory")
    if not name.strip("/") or any(p in ("", ".") for p in parts):
        raise ZipRefused(f"zip member {name!r}: empty or '.' path component")
    if any(len(p.encode()) > _NAME_MAX for p in parts):
        raise ZipRefused(f"zip member {name[:80]!r}...: a path component is longer than {_NAME_MAX} bytes")
    if len(parts) > max_depth:
        raise ZipRefused(f"zip member {name[:80]!r}: nested {len(parts)} levels deep; at most {max_depth}")


def _check_type(info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise ZipRefused(f"zip member {info.filename!r}: symlinks are not allowed")
    if kind not in _ALLOWED_TYPES:
        raise ZipRefused(f"zip member {info.filename!r}: only regular files and directories are allowed")
    if info.flag_bits & 0x1:
        raise ZipRefused(f"zip member {info.filename!r}: encrypted members are not supported")
    if info.compress_type not in _ALLOWED_METHODS:
        raise ZipRefused(f"zip member {info.filename!r}: compression method {info.compress_type} is not supported "
                         "(only stored and deflated)")


def _check_ratio(info: zipfile.ZipInfo, max_ratio: int) -> None:
    if info.file_size >= _RATIO_FLOOR and info.file_size > max_ratio * max(info.compress_size, 1):
        raise ZipRefused(f"zip member {info.filename!r}: compressed {info.file_size // max(info.compress_size, 1)}:1, "
                         f"more than {max_ratio}:1 (zip bomb?)")


def _check_paths(infos: list[zipfile.ZipInfo]) -> None:
    """No two members on one path, and no file where another member needs a directory."""
    files: set[str] = set()
    dirs: set[str] = set()
    for info in infos:
        path = info.filename.rstrip("/")
        if path in files or path in dirs:
            raise ZipRefused(f"zip member {info.filename!r}: the zip holds the same path twice")
        (dirs if info.is_dir() else files).add(path)
    for path in files | dirs:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise ZipRefused(f"zip member {path!r}: {'/'.join(parts[:i])!r} is a file, not a directory")


def _root(names: list[str]) -> str:
    if MANIFEST in names:
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) == 1:
        top = tops.pop() + "/"
        if top + MANIFEST in names:
            return top
    raise ZipRefused(f"no {MANIFEST} at the root of the zip (or inside its single top-level directory)")


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    with zf.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ZipRefused(f"zip member {info.filename!r}: larger than {limit} bytes")
    return data


def check_archive(file: IO[bytes], limits: ZipLimits, *, reserved_ids: set[str],
                  allow_unsigned_ingress: bool) -> Archive:
    """Check the archive and its manifest without writing anything."""
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ZipRefused(f"not a valid zip file: {exc}") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise ZipRefused("the zip is empty")
        if len(infos) > limits.max_files:
            raise ZipRefused(f"the zip has {len(infos)} members; at most {limits.max_files} are allowed")
        total = 0
        for info in infos:
            _check_name(info, limits.max_depth)
            _check_type(info)
            _check_ratio(info, limits.max_ratio)
            total += info.file_size
        if total > limits.max_unpacked:
            raise ZipRefused(f"the zip unpacks to {total} bytes; at most {limits.max_unpacked} are allowed")
        _check_paths(infos)
        names = [i.filename for i in infos]
        root = _root(names)
        if any(not n.startswith(root) for n in names):
            raise ZipRefused("every zip member must sit under the plugin's top-level directory")
        manifest_info = zf.getinfo(root + MANIFEST)
        if manifest_info.is_dir():
            raise ZipRefused(f"{MANIFEST} is a directory")
        try:
            raw = _read_member(zf, manifest_info, MANIFEST_MAX_BYTES)
        except _CORRUPT as exc:
            raise ZipRefused(f"zip member {manifest_info.filename!r} is corrupt: {exc}") from None
        try:
            doc = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ZipRefused(f"{MANIFEST} is not valid JSON: {str(exc)[:200]}") from None
        manifest = parse_manifest(doc, host_version=__version__, reserved_ids=reserved_ids,
                                  allow_unsigned_ingress=allow_unsigned_ingress)
        if root + manifest.main not in names or zf.getinfo(root + manifest.main).is_dir():
            raise ManifestError("main", "missing", f"{manifest.main!r} is not a file in the zip")
        return Archive(manifest=manifest, root=root, members=tuple(infos))


def extract(file: IO[bytes], archive: Archive, dest: Path, *, max_unpacked: int) -> None:
    """Write the checked members under `dest` (which must exist, empty). Sizes are counted as the
    data is decompressed: a member that inflates past its declared size, or the total past
    `max_unpacked`, stops the extraction, and so does a corrupt or truncated member (ZipRefused
    either way; the caller removes `dest`)."""
    try:
        _extract(file, archive, dest, max_unpacked)
    except ZipRefused:
        raise
    except _CORRUPT as exc:
        raise ZipRefused(f"the zip is corrupt or truncated: {str(exc)[:200]}") from None


def _extract(file: IO[bytes], archive: Archive, dest: Path, max_unpacked: int) -> None:
    total = 0
    with zipfile.ZipFile(file) as zf:
        for info in archive.members:
            rel = info.filename[len(archive.root):]
            if not rel:
                continue
            target = dest / posixpath.normpath(rel)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True, mode=0o755)
                continue
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            written = 0
            with zf.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    total += len(chunk)
                    if written > info.file_size or total > max_unpacked:
                        raise ZipRefused(f"zip member {info.filename!r} inflates past its declared size")
                    out.write(chunk)
            os.chmod(target, 0o644)
    os.chmod(dest, 0o755)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (Linux renameat2); elsewhere, two renames via a third name."""
    libc_name = ctypes.util.find_library("c")
    fn = getattr(ctypes.CDLL(libc_name, use_errno=True), "renameat2", None) if libc_name else None
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (38, 22):  # ENOSYS, EINVAL (kernel or filesystem without the flag)
            raise OSError(err, os.strerror(err), str(a))
    spare = a.with_name(a.name + ".swap")
    os.rename(a, spare)
    os.rename(b, a)
    os.rename(spare, b)
