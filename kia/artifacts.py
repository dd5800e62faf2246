"""Stage folders: atomic writes, content hashes, locks and the `manifest.json` written last.

Every stage writes into its own folder. A folder counts as complete only once `manifest.json`
exists, and that file is always the last one written, so a run killed half-way never looks done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import resource
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kia.errors import ArtifactError

MANIFEST = "manifest.json"
_UMASK = os.umask(0)
os.umask(_UMASK)
LOCK = ".kia.lock"


def _os_error(path: Path, exc: OSError) -> ArtifactError:
    if exc.errno == errno.ENOSPC:
        why = "no space left on the device"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied (read-only location?)"
    else:
        why = exc.strerror or str(exc)
    return ArtifactError(f"cannot write {path}: {why}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    Readers therefore see either the old file or the whole new one, never half of it.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual mode
    except OSError as exc:
        raise _os_error(path, exc) from exc
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise _os_error(path, exc) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=_default, ensure_ascii=False, allow_nan=False)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(path, to_json(obj) + "\n")


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(to_json(row, indent=None) + "\n")
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    path = Path(path)
    rows = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ArtifactError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: file not found") from exc
    return rows


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike[str], pattern: str = "*") -> str:
    """Hash of every file under a folder (names and contents), stable across machines."""
    root = Path(path)
    if root.is_file():
        return sha256_file(root)
    h = hashlib.sha256()
    for file in sorted(p for p in root.rglob(pattern) if p.is_file() and not p.name.startswith(".")):
        h.update(str(file.relative_to(root)).encode())
        h.update(sha256_file(file).encode())
    return h.hexdigest()


def config_hash(config: Any) -> str:
    return hashlib.sha256(to_json(config, indent=None).encode()).hexdigest()[:16]


def peak_memory_mb() -> float:
    """Peak resident memory of this process, in MiB.

    Linux's VmHWM where there is one: `ru_maxrss` survives `exec`, so a process started from a
    large parent (a notebook, a benchmark, a test runner) would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("kia", "torch", "transformers", "peft", "bitsandbytes", "trl", "datasets", "lm_eval", "vllm"):
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return out


# The layout of stage folders. Raise it when a change means an older kia would misread a folder
# (or this one an older folder); manifests without it predate it and share format 1's layout.
FORMAT = 1
MIN_FORMAT = 1


def write_manifest(
    folder: str | os.PathLike[str], *, stage: str, config: Any, files: Iterable[str] = (), **fields: Any
) -> Path:
    """Write `manifest.json` last: the stage, its config, versions, the sha256 of each of `files`
    (names in the folder; those missing are left out) and whatever else the stage reports.

    `read_manifest` checks those hashes, so a file changed after the run is caught by the next
    stage instead of being trusted."""
    folder = Path(folder)
    hashes = {name: sha256_file(folder / name) for name in files if (folder / name).is_file()}
    manifest = {
        "stage": stage,
        "format": FORMAT,
        "kia_version": versions().get("kia", "0"),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": config,
        "versions": versions(),
        "argv": sys.argv,
        "files": hashes,
        **fields,
    }
    return write_json(folder / MANIFEST, manifest)


def _rerun(stage: Any) -> str:
    return f"rerun `kia {stage}`" if isinstance(stage, str) and stage else "rerun the stage that wrote it"


def read_manifest(folder: str | os.PathLike[str], stage: str | None = None, *, verify: bool = True) -> dict[str, Any]:
    """Read a finished stage folder's manifest, or explain why the folder is not usable: unfinished,
    a manifest that is not kia's JSON, another stage's folder, a folder format of a newer or older
    kia, or (with `verify`) a file whose content no longer matches the hash the manifest recorded."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: no such folder")
    path = folder / MANIFEST
    if not path.exists():
        raise ArtifactError(f"{folder}: no {MANIFEST}, so the run that wrote it did not finish (rerun it to resume)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{path}: not valid JSON ({exc}); kia writes it whole, so it was edited or damaged: "
            f"{_rerun(stage)} into this folder with --overwrite"
        ) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("stage"), str):
        raise ArtifactError(
            f"{path}: not a kia manifest (no 'stage'); {_rerun(stage)} into this folder with --overwrite"
        )
    found = manifest["stage"]
    if stage is not None and found != stage:
        raise ArtifactError(f"{folder}: is a '{found}' folder, expected the output of 'kia {stage}'")
    fmt = manifest.get("format", 1)
    by = f"kia {manifest.get('kia_version', '?')}, folder format {fmt!r}"
    here = f"this is kia {versions().get('kia', '?')}, folder format {FORMAT}"
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > FORMAT:
        raise ArtifactError(
            f"{path}: written by a newer kia ({by}; {here}): upgrade kia (pip install -U kia), "
            f"or {_rerun(found)} with this one into another folder"
        )
    if fmt < MIN_FORMAT:
        raise ArtifactError(f"{path}: written by an older kia ({by}; {here}): {_rerun(found)} with this one")
    if verify:
        verify_files(folder, manifest)
    return manifest


def verify_files(folder: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Raise ArtifactError unless every file the manifest hashed is there with the same content."""
    folder = Path(folder)
    files = manifest.get("files") or {}
    if not isinstance(files, dict):
        raise ArtifactError(f"{folder / MANIFEST}: 'files' is not a mapping of names to hashes")
    for name, recorded in files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path}: missing, though {MANIFEST} lists it; {_rerun(manifest.get('stage'))}")
        now = sha256_file(path)
        if now != recorded:
            raise ArtifactError(
                f"{path}: changed after {MANIFEST} was written (sha256 {str(recorded)[:12]}… recorded, "
                f"{now[:12]}… now); restore the file or {_rerun(manifest.get('stage'))}"
            )


class FolderLock:
    """An exclusive lock on a stage folder (flock, so a killed process releases it at once).

    The lock file is removed on exit while the lock is still held, and a lock taken on a file that
    is no longer at the path is dropped and taken again: otherwise a process that opened the file
    just before its holder removed it would lock the removed file while a third process created
    and locked a new one, and both would write the folder."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.path = Path(folder) / LOCK
        self._fh: Any = None

    def __enter__(self) -> FolderLock:
        import fcntl

        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fh = open(self.path, "a+")
            except OSError as exc:
                raise _os_error(self.path, exc) from exc
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                fh.close()
                raise ArtifactError(
                    f"{self.path.parent}: is in use: another kia process is writing into this folder; "
                    "wait for it to finish or choose another -o"
                ) from exc
            try:
                mine = os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                mine = False
            if mine:
                self._fh = fh
                return self
            fh.close()  # its holder removed it as we opened it: lock the file now at the path

    def __exit__(self, *exc: object) -> None:
        import fcntl

        self.path.unlink(missing_ok=True)
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()


def locate(recorded: str, referrer: str | os.PathLike[str]) -> Path:
    """A folder a manifest names: as written (relative to the working directory then), else relative
    to the folder holding the manifest or one of its parents (the run moved, or runs from elsewhere)."""
    path = Path(recorded)
    if path.exists() or path.is_absolute():
        return path
    for base in Path(referrer).resolve().parents:
        if (base / path).exists():
            return base / path
    return path


def prepare_output(folder: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse to silently mix a finished run with a new one: a complete folder needs `overwrite`."""
    folder = Path(folder)
    if (folder / MANIFEST).exists():
        if not overwrite:
            raise ArtifactError(f"{folder}: already holds a finished run; pass --overwrite or choose another -o")
        (folder / MANIFEST).unlink()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(folder, exc) from exc
    return folder


TMP = ".kia-tmp"  # a run's own scratch folder (e.g. the audit's lm-eval task wrappers)


def remove_leftovers(folder: Path) -> None:
    """Temporary files a killed run left in its folder: `atomic_path` temps and the scratch folder."""
    import shutil

    shutil.rmtree(folder / TMP, ignore_errors=True)
    for stale in folder.rglob(".*.tmp"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


@contextmanager
def claim_output(folder: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Lock a stage's output folder, then check it (`prepare_output`) and clear a killed run's
    temporary files; yields the folder. The lock comes first, so a second command into a folder in
    use changes nothing in it, not even a finished run's manifest. A folder this call created is
    removed again if the stage fails before writing anything into it."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        with FolderLock(folder):
            prepare_output(folder, overwrite=overwrite)
            remove_leftovers(folder)
            yield folder
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise
