"""Where a streamed history's rows go: chunk files in its run folder, written as rows arrive.

A `GradientHistory` that streams (`GradientHistory.stream_to`) hands each
batch of new rows to a `ChunkStore`, which writes them as one numpy archive
``history/rows-<first>-<end>.npz`` (rows ``first`` to ``end - 1``) beside
``run.json``, and then forgets them. Each file is written to a temporary
name and renamed, so a crash leaves whole chunks only, and every chunk
written before it loads. The archives hold the same arrays as
``history.npz`` (``steps``, ``layer/<name>``, ``scalar/<name>``,
``variable/<name>``), for their rows only. No TensorFlow is imported here.

Example:

>>> import tempfile
>>> import numpy as np
>>> store = ChunkStore(tempfile.mkdtemp(), chunk_rows=2)
>>> chunk = store.write(0, {"steps": np.arange(2), "layer/grad_norm": np.ones((2, 1))})
>>> chunk.path.name, store.rows
('rows-000000000000-000000000002.npz', 2)
>>> [c.rows for c in chunk_files(store.folder)]
[2]
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The folder of a run folder that holds the chunks of a streamed history.
CHUNKS_DIR = "history"
_NAME = re.compile(r"rows-(\d{12})-(\d{12})\.npz")


@dataclass(frozen=True)
class Chunk:
    """One chunk file: rows ``first`` to ``first + rows - 1`` of the history."""

    first: int
    rows: int
    path: Path

    @property
    def end(self) -> int:
        return self.first + self.rows


class ChunkStore:
    """Writes a history's rows as chunk files into ``folder/history/``.

    Args:
        folder: the run folder (made if missing).
        chunk_rows: rows the history gathers before it writes a chunk.
            Defaults to `256`.
    """

    def __init__(self, folder: str | os.PathLike, chunk_rows: int = 256) -> None:
        self.folder = Path(folder)
        self.chunk_rows = max(int(chunk_rows), 1)
        (self.folder / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
        self.chunks: list[Chunk] = []

    def __repr__(self) -> str:
        return f"ChunkStore({str(self.folder)!r}, chunks={len(self.chunks)}, rows={self.rows})"

    @property
    def rows(self) -> int:
        """Rows written so far."""
        return self.chunks[-1].end if self.chunks else 0

    def write(self, first: int, arrays: dict[str, np.ndarray]) -> Chunk:
        """Writes rows ``first`` on (``arrays`` as in ``history.npz``) as one chunk, all or nothing."""
        rows = len(arrays["steps"])
        if first != self.rows:
            raise ValueError(f"chunk starts at row {first}, but {self.rows} rows are written")
        path = self.folder / CHUNKS_DIR / f"rows-{first:012d}-{first + rows:012d}.npz"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            # Renamed whole, so a reader (or a crash) never sees half a chunk.
            # Not fsynced: a chunk survives the process dying, and a chunk
            # per flush must stay cheap; the finished run folder is synced.
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        chunk = Chunk(first, rows, path)
        self.chunks.append(chunk)
        return chunk

    def covering(self, start: int, stop: int) -> Iterator[Chunk]:
        """The chunks holding any of rows ``start`` to ``stop - 1``, in order."""
        for chunk in self.chunks:
            if chunk.end > start and chunk.first < stop:
                yield chunk


def chunk_files(folder: str | os.PathLike) -> list[Chunk]:
    """The chunk files of the run folder ``folder``, in row order (temporary files and others skipped).

    Args:
        folder: the run folder.
    """
    chunks = []
    directory = Path(folder) / CHUNKS_DIR
    names = sorted(os.listdir(directory)) if directory.is_dir() else []
    for name in names:
        match = _NAME.fullmatch(name)
        if match:
            first, end = int(match.group(1)), int(match.group(2))
            chunks.append(Chunk(first, end - first, directory / name))
    return chunks
