"""Installing a plugin from an uploaded zip: every member checked and the manifest validated before a
byte is written; extraction into a hidden temp dir inside the plugins dir (so the final rename stays on
one filesystem and is atomic; `discover` skips dot-directories); then rename, or on update an atomic
directory swap (Linux `renameat2(RENAME_EXCHANGE)`, two renames elsewhere).

Refused (ZipRefused, naming the member): path escape (`..`, absolute, drive letters, backslashes, NUL),
symlinks, device files, FIFOs and sockets (from the Unix mode in `external_attr`), more than
`install_max_files` members, declared or actual uncompressed size past `install_unpacked_max_bytes`
(zip bombs: sizes are counted while decompressing, not trusted from the header), encrypted members,
a missing or invalid manifest, a `main` absent from the archive. The zip may hold the plugin at its
root or inside one top-level directory.

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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from plugbox import __version__
from plugbox.errors import ManifestError, ZipRefused
from plugbox.manifest import MANIFEST_MAX_BYTES, Manifest, parse_manifest

__all__ = ["Archive", "check_archive", "exchange", "extract"]

MANIFEST = "manifest.json"
_CHUNK = 64 * 1024
_ALLOWED_TYPES = (0, stat.S_IFREG, stat.S_IFDIR)  # 0: no Unix mode recorded (Windows zips)


@dataclass(frozen=True, slots=True)
class Archive:
    manifest: Manifest
    root: str  # "" or "dir/": the prefix stripped from every member
    members: tuple[zipfile.ZipInfo, ...]


def _check_name(name: str) -> None:
    if "\\" in name or "\x00" in name:
        raise ZipRefused(f"zip member {name!r}: backslashes and NUL are not allowed in paths")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise ZipRefused(f"zip member {name!r}: absolute paths are not allowed")
    parts = name.rstrip("/").split("/")
    if any(p == ".." for p in parts):
        raise ZipRefused(f"zip member {name!r}: '..' would escape the plugin directory")
    if not name.strip("/") or any(p == "" for p in parts):
        raise ZipRefused(f"zip member {name!r}: empty path component")


def _check_type(info: zipfile.ZipInfo) -> None:
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise ZipRefused(f"zip member {info.filename!r}: symlinks are not allowed")
    if kind not in _ALLOWED_TYPES:
        raise ZipRefused(f"zip member {info.filename!r}: only regular files and directories are allowed")
    if info.flag_bits & 0x1:
        raise ZipRefused(f"zip member {info.filename!r}: encrypted members are not supported")


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


def check_archive(file: IO[bytes], *, max_files: int, max_unpacked: int, reserved_ids: set[str],
            allow_unsigned_ingress: bool) -> Archive:
    """Check the archive and its manifest without writing anything."""
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ZipRefused(f"not a valid zip file: {exc}") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise ZipRefused("the zip is empty")
        if len(infos) > max_files:
            raise ZipRefused(f"the zip has {len(infos)} members; at most {max_files} are allowed")
        total = 0
        for info in infos:
            _check_name(info.filename)
            _check_type(info)
            total += info.file_size
        if total > max_unpacked:
            raise ZipRefused(f"the zip unpacks to {total} bytes; at most {max_unpacked} are allowed")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise ZipRefused("the zip holds the same path twice")
        root = _root(names)
        if any(not n.startswith(root) for n in names):
            raise ZipRefused("every zip member must sit under the plugin's top-level directory")
        raw = _read_member(zf, zf.getinfo(root + MANIFEST), MANIFEST_MAX_BYTES)
        try:
            doc = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ManifestError(MANIFEST, "json", f"is not valid JSON: {exc}") from None
        manifest = parse_manifest(doc, host_version=__version__, reserved_ids=reserved_ids,
                                  allow_unsigned_ingress=allow_unsigned_ingress)
        if root + manifest.main not in names:
            raise ManifestError("main", "missing", f"{manifest.main!r} is not in the zip")
        return Archive(manifest=manifest, root=root, members=tuple(infos))


def extract(file: IO[bytes], archive: Archive, dest: Path, *, max_unpacked: int) -> None:
    """Write the checked members under `dest` (which must exist, empty). Sizes are counted as the
    data is decompressed: a member that inflates past its declared size, or the total past
    `max_unpacked`, stops the extraction (the caller removes `dest`)."""
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
