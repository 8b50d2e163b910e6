"""`plugbox pack DIR`: build the zip an operator installs. Owns which files go in (a gitignore-style
`.plugboxignore`, on top of defaults that drop tests, caches, virtualenvs and dotfiles) and checking the
result with the installer's own `check_archive` (same limits from the settings, same manifest
validation, the bundled built-in ids reserved) before the zip is written, so a packed zip installs.
Must not install anything or talk to a server."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pathspec

from plugbox.builtins.auto_reply import MANIFEST as AUTO_REPLY_MANIFEST
from plugbox.errors import ZipRefused
from plugbox.lifecycle.archive import ZipLimits, check_archive
from plugbox.settings import Settings

__all__ = ["DEFAULT_IGNORE", "IGNORE_FILE", "pack", "packed", "packed_files"]

IGNORE_FILE = ".plugboxignore"
DEFAULT_IGNORE = ("tests/", "__pycache__/", "*.pyc", ".*", ".venv/", "venv/", "*.zip", "pytest.ini")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # reproducible zips: the same tree packs to the same bytes


def packed_files(root: Path) -> list[Path]:
    """The files of `root` that go into its zip, relative to `root`, sorted."""
    lines = list(DEFAULT_IGNORE)
    ignore_file = root / IGNORE_FILE
    if ignore_file.is_file():
        lines += ignore_file.read_text(encoding="utf-8").splitlines()
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not spec.match_file(f"{(rel_dir / d).as_posix()}/"))
        out += [rel_dir / f for f in filenames if not spec.match_file((rel_dir / f).as_posix())]
    return sorted(out)


def pack(root: Path, out: Path, settings: Settings) -> list[Path]:
    """Zip `root`'s packed files into `out` (the plugin at the zip's root); ZipRefused or ManifestError
    if the installer would refuse it, and then nothing is written. Returns the files packed."""
    files, data = packed(root, settings)
    out.write_bytes(data)
    return files


def packed(root: Path, settings: Settings) -> tuple[list[Path], bytes]:
    """The files `pack` takes from `root` and the zip it makes of them, checked as `pack` says."""
    files = packed_files(root)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            source = root / rel
            if source.is_symlink():
                # the installer refuses symlinks; pack what an operator would see, or refuse loudly
                raise ZipRefused(f"{rel.as_posix()} is a symlink; the installer refuses symlinks")
            info = zipfile.ZipInfo(rel.as_posix(), _FIXED_TIME)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, source.read_bytes())
    data = buffer.getvalue()
    if len(data) > settings.install_zip_max_bytes:
        raise ZipRefused(f"the zip is {len(data)} bytes; the server accepts at most {settings.install_zip_max_bytes}")
    limits = ZipLimits(settings.install_max_files, settings.install_unpacked_max_bytes,
                       settings.install_max_depth, settings.install_max_ratio)
    check_archive(io.BytesIO(data), limits, reserved_ids={str(AUTO_REPLY_MANIFEST["id"])},
                  allow_unsigned_ingress=settings.allow_unsigned_ingress)
    return files, data
