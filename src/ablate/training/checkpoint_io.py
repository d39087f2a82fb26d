"""Checkpoint files a reader can trust: atomic writes in the checkpoint's own folder and a checksum beside each.

Lightning's TorchCheckpointIO writes through fsspec's transaction, which stages the file in ``$TMPDIR`` with
``mkstemp`` (mode 0600, whatever the umask) and moves it across file systems at the end: a kill leaves the staged
file behind, and nothing ever notices a checkpoint whose bytes changed later. This plugin keeps Lightning's format
and replaces only the file handling (hand-written: no library offers checksummed atomic checkpoint files):

- ``<name>.ckpt`` is written to ``.<name>.ckpt.<pid>.<random>.tmp`` in the same folder (created like ``open()``
  does, so the umask decides the mode), flushed and fsynced, then renamed over the target;
- ``<name>.ckpt.sha256`` (``sha256sum`` format) names the file's digest. While the rename is in flight it lists
  both the old and the new digest, so a kill at any instant leaves a pair that verifies;
- ``verify`` is the one check every reader runs first (resume, test-from-best, evaluate.py, ``model.init_from``, all
  through ``load_checkpoint`` or ``load_verified``): the digest when a ``.sha256`` file is beside the checkpoint,
  else the CRC-32 that the zip container written by ``torch.save`` keeps for every record (a checkpoint copied
  without its ``.sha256``, or made elsewhere). ``torch.load`` itself never checks those CRCs, so damaged tensor bytes
  would load as weights. A damaged file is a one-line ``CheckpointError`` naming it.

Leftover ``*.tmp`` files of a killed writer are removed by ``remove_stale_temporaries`` on the next start.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec.utils
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ablate.errors import AblateError
from ablate.training.liveness import pid_alive

SUFFIX = ".sha256"


def is_local_path(path: str | Path) -> bool:
    """A path on this machine's file system (no ``s3://`` and the like): fsspec's own protocol test, the one Lightning
    uses internally."""
    return fsspec.utils.get_protocol(str(path)) == "file"


def tests_best_weights(test_weights: str, early_stopping_patience: int, has_val: bool) -> bool:
    """Whether a run tests (and evaluate.py later re-scores) its best-validation checkpoint rather than its last:
    ``test_weights: best`` (the default) or early stopping, which means "keep the best weights" whatever
    test_weights says; never without a validation split (no best checkpoint)."""
    return (test_weights == "best" or early_stopping_patience > 0) and has_val


class CheckpointError(AblateError):
    """A checkpoint that cannot be read or whose bytes do not match its checksum."""


def digest(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checksum_path(path: str | Path) -> Path:
    return Path(f"{path}{SUFFIX}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _stage(target: Path, write: Callable[[Any], None]) -> Path:
    """Write a same-folder temporary file for ``target`` (flushed and fsynced) and return its path."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 applies the umask, as open() does (mkstemp would force 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _commit(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _write_atomic(target: Path, write: Callable[[Any], None]) -> None:
    """Readers see the old or the new file, never half of one."""
    _commit(_stage(target, write), target)


def _write_checksums(path: Path, digests: list[str]) -> None:
    text = "".join(f"{d}  {path.name}\n" for d in digests).encode()
    _write_atomic(checksum_path(path), lambda f: f.write(text))


def verify(path: str | Path) -> None:
    """Raise CheckpointError unless ``path`` is intact: a digest in its ``.sha256`` file when there is one, else
    every record's CRC in the zip archive (what ``torch.save`` writes)."""
    path = Path(path)
    sums = checksum_path(path)
    if sums.is_file():
        expected = {line.split()[0] for line in sums.read_text().splitlines() if line.strip()}
        if digest(path) not in expected:
            raise CheckpointError(
                f"checkpoint {path} is corrupted (its sha256 does not match {sums.name}); "
                "resume from another checkpoint or start the run again"
            )
        return
    _verify_archive(path)


# What zipfile raises on a damaged archive besides a CRC mismatch (a broken header, a truncated record).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError)


def _verify_archive(path: Path) -> None:
    """The zip container's own per-record CRC-32 (``ZipFile.testzip`` reads every record once)."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except _ZIP_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupted or not a checkpoint (not a readable torch.save zip archive: {reason}); "
            "use an intact copy (with its .sha256 file) or another checkpoint"
        ) from err
    if damaged is not None:
        raise CheckpointError(
            f"checkpoint {path} is corrupted (record {damaged} fails its CRC check; no {path.name}{SUFFIX} beside "
            "it); use an intact copy (with its .sha256 file) or another checkpoint"
        )


def load_verified(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Any reader of our checkpoints: checksum, then ``torch.load(weights_only=True)``, errors in one line."""
    verify(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {message}; pass a checkpoint written by ablate") from err


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the ``.*.tmp`` files a killed writer left in ``folder`` (only files of processes that are gone)."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for tmp in folder.glob(".*.tmp"):
        parts = tmp.name.split(".")
        pid = next((int(p) for p in parts if p.isdigit()), None)
        if pid is not None and pid != os.getpid() and pid_alive(pid):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO with atomic same-folder writes and sha256 files (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if not is_local_path(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"storage_options is not supported by {type(self).__name__}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _stage(path, lambda f: torch.save(checkpoint, f))
        try:
            new = digest(tmp)
            old = [digest(path)] if path.is_file() and checksum_path(path).is_file() else []
            # Both digests while the rename is in flight (a kill leaves a verifying pair), then the new one alone.
            if old:
                _write_checksums(path, [new, *old])
            _commit(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _write_checksums(path, [new])
        _fsync_dir(path.parent)

    def load_checkpoint(
        self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if is_local_path(path) and Path(path).is_file():
            verify(path)
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        if is_local_path(path):
            checksum_path(path).unlink(missing_ok=True)
