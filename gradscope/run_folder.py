"""Where a run folder goes, and how it is written: whole, or not at all.

A run is *claimed* before training and *written* after it:

* `claim_run_folder` picks the folder and checks it, so an unusable
  ``--out`` fails before a step is spent, and a default name already taken
  gets a numbered suffix instead of being overwritten.
* `write_run_folder` builds the folder beside its final place and renames it
  in, so a reader sees the old run or the new one, never a mix, and a failed
  write leaves the old run exactly as it was. It raises `SaveError`, one
  line saying what failed and where.
* `rescue_history` keeps the record in the system's temporary folder when
  the run folder cannot be written, so a finished run is never lost
  (`gradscope.report.save_run` does this by itself).

Files and folders made here get the permissions the user's umask gives
(0666 and 0777 less the umask), like any file the user creates.
No TensorFlow is imported here.

Example:

>>> import tempfile
>>> runs = Path(tempfile.mkdtemp()) / "runs"
>>> first = claim_run_folder(None, runs / "tanh-glorot_uniform")
>>> second = claim_run_folder(None, runs / "tanh-glorot_uniform")
>>> first.name, second.name
('tanh-glorot_uniform', 'tanh-glorot_uniform-2')
>>> _ = write_run_folder(first, lambda tmp: (tmp / "notes.txt").write_text("hello"))
>>> sorted(p.name for p in first.iterdir())
['notes.txt']
>>> shutil.rmtree(runs.parent)
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradscope.history import COMPARISON_FILE, RUN_FILE, GradientHistory, RunFolderError, current_umask
from gradscope.reproduction import REPRODUCTION_FILE

__all__ = [
    "RESCUE_PREFIX",
    "RunFolderError",
    "SaveError",
    "claim_run_folder",
    "describe_os_error",
    "release_run_folder",
    "rescue_history",
    "write_run_folder",
]

RESCUE_PREFIX = "gradscope-rescued-"
_MAX_SUFFIX = 10_000

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}
if hasattr(errno, "EDQUOT"):
    _REASONS[errno.EDQUOT] = "the disk quota is exceeded"


class SaveError(OSError):
    """A run folder could not be written. The old run there, if any, is untouched.

    ``str(error)`` is one line, e.g. ``saving to runs/tanh failed: the disk
    is full (at runs/tanh/history.npz); the record was kept in
    /tmp/gradscope-rescued-k2j4: gradscope report /tmp/gradscope-rescued-k2j4``.

    Attributes:
        folder: where the run was to be written.
        reason: what failed, e.g. ``"the disk is full"``.
        where: the file or folder it failed at, or None.
        rescued: the folder the record was kept in instead, or None.
        rescue_failure: why keeping it elsewhere failed too, or None.
        errno: the operating system's error number, when there was one.

    Example:

    >>> error = SaveError("runs/tanh", "the disk is full", errno.ENOSPC)
    >>> error.rescued = Path("/tmp/gradscope-rescued-k2j4")
    >>> print(error)
    saving to runs/tanh failed: the disk is full; the record was kept in /tmp/gradscope-rescued-k2j4: \
gradscope report /tmp/gradscope-rescued-k2j4
    """

    def __init__(self, folder: str | os.PathLike, reason: str, code: int | None = None,
                 where: str | os.PathLike | None = None) -> None:
        super().__init__(reason)
        self.folder = Path(folder)
        self.reason = " ".join(reason.split())
        self.where = None if where is None else Path(where)
        self.errno = code
        self.rescued: Path | None = None
        self.rescue_failure: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its fields (the default would pass only the reason).
        return type(self), (self.folder, self.reason, self.errno, self.where), self.__dict__

    def __str__(self) -> str:
        text = f"saving to {self.folder} failed: {self.reason}"
        if self.where is not None and self.where != self.folder:
            text += f" (at {self.where})"
        if self.rescued is not None:
            text += f"; the record was kept in {self.rescued}: gradscope report {self.rescued}"
        elif self.rescue_failure is not None:
            text += f"; keeping the record in {tempfile.gettempdir()} failed too: {self.rescue_failure}"
        return text


def describe_os_error(exc: BaseException) -> str:
    """What an error means, in a few words: ``"the disk is full"``, ``"permission denied"``, ...

    Args:
        exc: the error (an `OSError` is described by its errno, anything else by its type and text).

    Example:

    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device"))
    'the disk is full'
    >>> describe_os_error(OSError(errno.ENOENT, "No such file or directory"))
    'no such file or directory'
    """
    if isinstance(exc, SaveError):
        return exc.reason
    if isinstance(exc, OSError):
        if exc.errno in _REASONS:
            return _REASONS[exc.errno]
        text = exc.strerror or str(exc) or type(exc).__name__
        return text[:1].lower() + text[1:]
    return f"{type(exc).__name__}: {exc}"


def claim_run_folder(path: str | os.PathLike | None, default: str | os.PathLike, overwrite: bool = False) -> Path:
    """Picks the folder a run will be saved to, before training; returns it.

    Call it before the first step: every reason the folder cannot be used
    shows up now, not after the training. The folder is created (empty) when
    it did not exist, so two runs started at the same time with the same
    default name get different folders. `release_run_folder` removes it
    again if the run ends without saving.

    * ``path`` given (``--out``): an existing file, a folder holding a run
      or comparison, or a folder holding anything else is refused unless
      ``overwrite`` (a file always is; so are the current folder, one
      holding it, the home folder and ``/``, which `write_run_folder` would
      move away). The folder is replaced only when the new run is written.
    * ``path`` None: ``default``, or when that exists ``default-2``,
      ``default-3``, ...; with ``overwrite``, ``default`` itself as if given.
    * The parent folders are created, and one must be able to create files
      in the parent (`write_run_folder` builds the run there first).

    Args:
        path: the folder the user asked for, or None.
        default: the folder to use (or number) when ``path`` is None.
        overwrite: allow replacing an existing run or non-empty folder.

    Raises:
        RunFolderError: the folder cannot be used; the message is one line
            naming the path and what is wrong.

    Example:

    >>> import tempfile
    >>> runs = Path(tempfile.mkdtemp())
    >>> (runs / "taken").mkdir()
    >>> _ = (runs / "taken" / "run.json").write_text("{}")
    >>> claim_run_folder(runs / "taken", runs / "x")
    Traceback (most recent call last):
    ...
    gradscope.history.RunFolderError: .../taken: a run is saved there; pass --overwrite to replace it, or choose \
another --out
    >>> claim_run_folder(runs / "taken", runs / "x", overwrite=True) == runs / "taken"
    True
    >>> shutil.rmtree(runs)
    """
    if path is None and not overwrite:
        return _claim_fresh(_plain(Path(default)))
    return _claim(_plain(Path(default if path is None else path)), overwrite)


def release_run_folder(folder: str | os.PathLike) -> None:
    """Removes a claimed folder that is still empty (the run ended before it was saved).

    A folder holding anything is left alone, as is a missing one.

    Args:
        folder: the folder `claim_run_folder` returned.

    Example:

    >>> import tempfile
    >>> folder = claim_run_folder(None, Path(tempfile.mkdtemp()) / "run")
    >>> release_run_folder(folder)
    >>> folder.exists()
    False
    >>> folder.parent.rmdir()
    """
    try:
        os.rmdir(folder)  # fails, harmlessly, on a folder that is not empty
    except OSError:
        pass


def write_run_folder(final: str | os.PathLike, write: Callable[[Path], object], overwrite: bool = False) -> Path:
    """Writes a whole folder at ``final`` through ``write(folder)``, all or nothing; returns ``final``.

    ``write`` fills a fresh temporary folder beside ``final``
    (``.<name>.tmp-XXXX``); only when it has returned is that folder renamed
    to ``final``. A missing or empty ``final`` is replaced in one rename.
    With ``overwrite``, an existing run is renamed aside, the new one
    renamed in, and the old one deleted, so a reader never sees a mix of
    the two. If anything fails before the switch, the temporary folder is
    removed and an old run at ``final`` stays byte for byte as it was.

    Args:
        final: the folder to write.
        write: fills the folder it is given (it exists, and is empty).
        overwrite: replace a ``final`` that is not empty.

    Raises:
        SaveError: an `OSError` while writing or switching (or a ``final``
            that is a file, or not empty without ``overwrite``). Other
            exceptions from ``write`` propagate unchanged after the clean-up.

    Example:

    >>> import tempfile
    >>> final = Path(tempfile.mkdtemp()) / "run"
    >>> _ = write_run_folder(final, lambda tmp: (tmp / "a.txt").write_text("old"))
    >>> _ = write_run_folder(final, lambda tmp: (tmp / "b.txt").write_text("new"), overwrite=True)
    >>> sorted(p.name for p in final.iterdir())
    ['b.txt']
    >>> write_run_folder(final, lambda tmp: None)
    Traceback (most recent call last):
    ...
    gradscope.run_folder.SaveError: saving to .../run failed: the folder is not empty (pass overwrite=True to \
replace it)
    >>> shutil.rmtree(final.parent)
    """
    final = _plain(Path(final))
    try:
        _check_target(final, overwrite)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    except SaveError:
        raise
    except OSError as exc:
        raise _save_error(final, exc) from exc
    try:
        # mkdtemp makes the folder 0700, private; a run folder is made like
        # any other folder the user creates.
        os.chmod(tmp, 0o777 & ~current_umask())
        write(tmp)
        _sync_tree(tmp)
        _switch(tmp, final, overwrite)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, SaveError):
            raise _save_error(final, exc, tmp) from exc
        raise
    _sync_dir(final.parent)
    return final


def rescue_history(history: GradientHistory) -> Path:
    """Saves the record alone (`GradientHistory.save`) to a new folder in the system's temporary folder.

    For when the run folder cannot be written: the training is not lost.

    Args:
        history: the record.

    Returns:
        The new folder, ``<tmp>/gradscope-rescued-XXXX``; `load_run` and
        ``gradscope report`` read it.

    Raises:
        OSError: the record could not be written there either (nothing is left behind).

    Example:

    >>> import numpy as np
    >>> from gradscope.history import load_run
    >>> h = GradientHistory(["dense"])
    >>> h.append([0, 1], {"grad_norm": np.ones((2, 1))})
    >>> folder = rescue_history(h)
    >>> folder.name.startswith("gradscope-rescued-"), len(load_run(folder))
    (True, 2)
    >>> shutil.rmtree(folder)
    """
    folder = Path(tempfile.mkdtemp(prefix=RESCUE_PREFIX))
    try:
        os.chmod(folder, 0o777 & ~current_umask())
        history.save(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


# -- claiming -----------------------------------------------------------------
def _plain(path: Path) -> Path:
    # "." or "a/.." has no name to build ".<name>.tmp-XXXX" from, nor a
    # parent to build it in: spell such a path out.
    return Path(os.path.abspath(path)) if path.name in ("", ".", "..") else path


def _claim_fresh(base: Path) -> Path:
    _check_parent(base)
    for n in range(1, _MAX_SUFFIX):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            # mkdir is the claim: of two runs racing for a name, one gets it.
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunFolderError(candidate, f"cannot create the folder ({describe_os_error(exc)})") from None
    raise RunFolderError(base, f"{_MAX_SUFFIX} runs of this name exist already; choose an --out")


def _claim(path: Path, overwrite: bool) -> Path:
    if path.is_symlink():
        # The run goes where the link points; replacing the link itself
        # would surprise whoever made it.
        path = Path(os.path.realpath(path))
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise RunFolderError(path, "a file, not a folder; --out names the folder a run is saved in")
        _refuse_enclosing(path, RunFolderError)
        try:
            names = os.listdir(path)
        except OSError as exc:
            raise RunFolderError(path, f"cannot be read ({describe_os_error(exc)})") from None
        if not overwrite:
            if RUN_FILE in names or COMPARISON_FILE in names or REPRODUCTION_FILE in names:
                kind = ("comparison" if COMPARISON_FILE in names
                        else "reproduction" if REPRODUCTION_FILE in names else "run")
                raise RunFolderError(path, f"a {kind} is saved there; pass --overwrite to replace it, "
                                           "or choose another --out")
            if names:
                raise RunFolderError(path, f"the folder is not empty ({len(names)} entries) and holds no gradscope "
                                           "run; choose another --out, or pass --overwrite to replace the folder "
                                           "and everything in it")
        _check_parent(path)
        return path
    _check_parent(path)
    try:
        path.mkdir()
    except FileExistsError:
        return _claim(path, overwrite)  # made since we looked: judge what is there now
    except OSError as exc:
        raise RunFolderError(path, f"cannot create the folder ({describe_os_error(exc)})") from None
    return path


def _check_parent(path: Path) -> None:
    """Creates the parent folders of ``path`` and checks a file can be created in its parent."""
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), parent)
        raise RunFolderError(path, f"cannot create its folder: {blocker} is a file") from None
    except OSError as exc:
        raise RunFolderError(path, f"cannot create the folder {parent} ({describe_os_error(exc)})") from None
    try:
        # Writable by the permission bits is not enough (read-only mounts,
        # ACLs, quotas): create a file and remove it.
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".gradscope-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunFolderError(path, f"cannot write in {parent} ({describe_os_error(exc)})") from None


def _refuse_enclosing(path: Path, error: type[RunFolderError] | type[SaveError]) -> None:
    # Replacing a folder moves it away; that must not be the folder we
    # stand in (or one above it), the home folder or the root.
    real = os.path.realpath(path)
    here = os.path.realpath(os.getcwd())
    try:
        home = os.path.realpath(Path.home())
    except (RuntimeError, KeyError):
        home = None
    if os.path.dirname(real) == real:
        problem = "the root folder cannot hold a run"
    elif real == home:
        problem = "the home folder cannot be replaced by a run; choose a folder inside it"
    elif os.path.commonpath([real, here]) == real:
        problem = "holds the current folder, which cannot be replaced by a run; choose another folder"
    else:
        return
    if error is SaveError:
        raise SaveError(path, problem, errno.EBUSY)
    raise RunFolderError(path, problem)


# -- writing ------------------------------------------------------------------
def _check_target(final: Path, overwrite: bool) -> None:
    """Fails early, before any work, where the switch would fail at the end."""
    if final.is_symlink():
        raise SaveError(final, "it is a symbolic link; save to the folder it points to", errno.ENOTDIR)
    if final.exists() and not final.is_dir():
        raise SaveError(final, "it is a file, not a folder", errno.ENOTDIR)
    if final.is_dir():
        _refuse_enclosing(final, SaveError)
        if not overwrite and os.listdir(final):
            raise SaveError(final, "the folder is not empty (pass overwrite=True to replace it)", errno.ENOTEMPTY)


def _switch(tmp: Path, final: Path, overwrite: bool) -> None:
    try:
        # A missing or empty final is replaced in one step; a non-empty one
        # makes this fail, so a run saved there meanwhile is never lost.
        os.rename(tmp, final)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if not overwrite:
            raise SaveError(final, "the folder is not empty (pass overwrite=True to replace it)", exc.errno) from None
    # POSIX has no portable atomic swap of two folders: move the old run
    # aside, the new one in, then delete the old. Between the two renames a
    # reader finds no folder, never a mix.
    aside = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
    try:
        os.rename(final, aside)  # a folder may be renamed onto an empty one
    except BaseException:
        os.rmdir(aside)
        raise
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(aside, final)  # put the old run back
        raise
    try:
        shutil.rmtree(aside)
    except OSError as exc:
        warnings.warn(f"the new run is saved in {final}, but the old one could not be deleted from {aside} "
                      f"({describe_os_error(exc)})", stacklevel=3)


def _sync_tree(folder: Path) -> None:
    # On disk before the rename: after a crash the new name must not point
    # at empty files. A full disk can also first show up here.
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(Path(root))


def _sync_dir(folder: Path) -> None:
    # Best effort: some systems cannot open or fsync a folder.
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


def _save_error(final: Path, exc: OSError, tmp: Path | None = None) -> SaveError:
    where = exc.filename
    if isinstance(where, (str, bytes, os.PathLike)):
        where = Path(os.fsdecode(where))
        # The user never sees the temporary name: say where in the run it was.
        if tmp is not None and where.is_relative_to(tmp):
            where = final / where.relative_to(tmp)
    else:
        where = None
    return SaveError(final, describe_os_error(exc), exc.errno, where)
