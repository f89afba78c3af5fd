"""A disk that fills up mid-session and frees again, for the transcript writer's tests.

Where this machine lets us mount one (root with the mount capability), it is a real 64 KiB
tmpfs: ``fill()`` writes a filler file until the file system says ENOSPC, so the next
caption's write comes up short at the last page and then fails, exactly as on a real disk.
Elsewhere (CI in an unprivileged container) the writer's lowest layer,
``subtitler.transcripts._os_write``, behaves as a full disk does: a short write of the bytes
that still fit, then ``OSError(ENOSPC)``. The tests run the same either way; ``kind`` says which.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

from subtitler import transcripts

SIZE = 64 * 1024


class TmpfsDisk:
    kind = "tmpfs"

    def __init__(self, mount_point: Path):
        self.path = Path(mount_point)
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE // 1024}k", "tmpfs", str(self.path)],
                       check=True, capture_output=True)
        self.filler = self.path / ".filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as f:
            for chunk in (4096, 512, 64, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


class InjectedDisk:
    """``transcripts._os_write`` as on a full disk: the last ``slack`` bytes fit, then ENOSPC."""

    kind = "injected"

    def __init__(self, folder: Path, monkeypatch, slack: int = 37):
        self.path = Path(folder)
        self.path.mkdir(parents=True, exist_ok=True)
        self.slack = slack
        self.room: int | None = None  # bytes that still fit; None: plenty
        real = os.write

        def write(fd: int, data) -> int:
            if self.room is None:
                return real(fd, data)
            if self.room <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = real(fd, bytes(data[: self.room]))
            self.room -= n
            return n
        monkeypatch.setattr(transcripts, "_os_write", write)

    def fill(self) -> None:
        self.room = self.slack

    def free(self) -> None:
        self.room = None

    def close(self) -> None:
        self.free()


def can_mount() -> bool:
    # SUBTITLER_TEST_NO_MOUNT=1 takes the injected path here too (what an unprivileged CI gets)
    if os.environ.get("SUBTITLER_TEST_NO_MOUNT"):
        return False
    return os.geteuid() == 0 and _mount_works()


_mount_ok: bool | None = None


def _mount_works() -> bool:
    global _mount_ok
    if _mount_ok is None:
        import tempfile

        probe = Path(tempfile.mkdtemp(prefix="subtitler-mount-probe-"))
        try:
            _mount_ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(probe)],
                                       capture_output=True).returncode == 0
            if _mount_ok:
                subprocess.run(["umount", str(probe)], capture_output=True)
        except OSError:
            _mount_ok = False
        finally:
            probe.rmdir()
    return _mount_ok


def full_disk(folder: Path, monkeypatch):
    """A TmpfsDisk at ``folder`` where mounting works, else an InjectedDisk there."""
    return TmpfsDisk(folder) if can_mount() else InjectedDisk(folder, monkeypatch)
