"""Acting in a directory that someone other than root can write: as its owner, or not at all.

janitor runs as root. Where only root can write a directory, root creating, renaming and
compressing files there is safe when each step goes through the directory's descriptor.
Where another account can write it, that account can race every name janitor creates or
reuses (plant a symlink or a hard link to /etc/shadow as `app.log.2`, swap a finished copy
for a FIFO) between two of janitor's calls. logrotate's answer is its `su` directive, and it
refuses such a directory without one; janitor does the same, with one design used by every
step that *creates or renames names in place* (truncate's rotation chain, compression and
crash records; restore's copies and recreated directories):

* the directory is writable only by root (owner uid 0; group 0 or not group-writable; not
  world-writable): janitor acts as root;
* the directory is writable by exactly one other account, its owner (not group- or
  world-writable): the step runs in a child process with that owner's uid and the
  directory's gid, no supplementary groups, so it can do nothing the owner could not do
  anyway (`su` may name another account);
* the directory is writable by a group or by everyone (a shared upload directory, /tmp):
  refused, with one line naming the directory and the policy key `su`, unless the policy
  sets `su: USER[:GROUP]`, in which case the step runs as that account.

Deleting, moving into janitor's own trash and reading for archive never create a name in
the user's directory; they stay root operations through verified descriptors.

The child inherits open descriptors (the directory's, a source file's), so it never looks a
path up again; results and exceptions come back pickled through a pipe.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pickle
import pwd
import select
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import JanitorError

T = TypeVar("T")


@dataclass(frozen=True)
class Credentials:
    """Who a step runs as; `uid == 0` means as root, in this process."""

    uid: int
    gid: int

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def describe(self) -> str:
        try:
            user = pwd.getpwuid(self.uid).pw_name
        except KeyError:
            user = str(self.uid)
        try:
            group = grp.getgrgid(self.gid).gr_name
        except KeyError:
            group = str(self.gid)
        return f"{user}:{group}"


ROOT = Credentials(0, 0)


def parse_su(value: str) -> Credentials:
    """`USER[:GROUP]` (names or numbers) as credentials; ValueError with a reason otherwise."""
    user, _, group = value.partition(":")
    if not user:
        raise ValueError("expected USER or USER:GROUP")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"no such user {user!r}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"no such group {group!r}") from None
    return Credentials(entry.pw_uid, gid)


def writers_of(st: os.stat_result) -> str | None:
    """None when only root can write the directory; else who else can ('owner', 'group', 'others')."""
    mode = st.st_mode
    if mode & stat.S_IWOTH:
        return "others"
    if mode & stat.S_IWGRP and st.st_gid != 0:
        return "group"
    if st.st_uid != 0 and mode & stat.S_IWUSR:
        return "owner"
    return None


def credentials_for_dir(dir_fd: int, display: str, *, su: Credentials | None, policy: str) -> Credentials:
    """Whom to act as when creating or renaming names in the directory `dir_fd`.

    `display` is the directory as the operator knows it (for the message); `su` the policy's
    `su:` setting. Raises E_UNSAFE_DIR for a shared directory without `su`.
    """
    if os.geteuid() != 0:
        # Not root: there is no privilege to turn against anyone; act as ourselves.
        return Credentials(os.geteuid(), os.getegid())
    if su is not None:
        return su
    st = os.fstat(dir_fd)
    who = writers_of(st)
    if who is None:
        return ROOT
    if who == "owner":
        return Credentials(st.st_uid, st.st_gid)
    owner = Credentials(st.st_uid, st.st_gid).describe()
    raise JanitorError(
        f"{display} is writable by {'its group' if who == 'group' else 'everyone'} "
        f"(owner {owner}, mode {stat.S_IMODE(st.st_mode):o}); janitor will not create files there as root: "
        f"set `su: USER[:GROUP]` on policy {policy!r} to act there as that account",
        code="E_UNSAFE_DIR",
    )


def refuse_foreign_owner(creds: Credentials, recorded_uid: int, display: str) -> None:
    """Refuse to (re)create as `creds` a file whose recorded owner is another account.

    A file made by `run_as(creds, ...)` belongs to `creds`: restoring root's 0600 report
    into a directory a service account owns would make it that account's file, which it
    could then read (red team finding 2). Restore, copy-back and any step that recreates
    another account's file in a user's directory calls this first. Acting as root (a
    root-only directory) the owner is set through the descriptor, so nothing is refused; a
    janitor that is not root has no privilege to hand over.
    """
    if creds.is_root or recorded_uid == creds.uid or os.geteuid() != 0:
        return
    try:
        owner = pwd.getpwuid(recorded_uid).pw_name
    except KeyError:
        owner = str(recorded_uid)
    advice = "restore it by hand" if recorded_uid == 0 else f"set `su:` to {owner}, or restore it by hand"
    raise JanitorError(
        f"{display} belongs to {owner} but would be recreated as {creds.describe()}, who may write its directory: "
        f"the copy would be that account's file; not restoring it ({advice})",
        code="E_UNSAFE_DIR",
    )


def _set_pdeathsig() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux/glibc: the stop detection still holds
        pass


_PR_SET_PDEATHSIG = 1
# How often the parent looks whether its child was stopped while it waits for the result.
_POLL_MS = 50


def _child(creds: Credentials, step: Callable[[], T], write_end: int, parent: int) -> None:
    """The forked child: drop to `creds`, run `step`, send the pickled outcome; never returns."""
    status = 0
    try:
        # Still root here, so nobody else can signal us yet. Whoever we become may: every
        # signal it sends must end this child only, never reach the parent as an exception.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL)
        for fd in list(_private_fds):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.setgroups([])
            os.setresgid(creds.gid, creds.gid, creds.gid)
            os.setresuid(creds.uid, creds.uid, creds.uid)
        except OSError as exc:  # no CAP_SETUID/CAP_SETGID (a unit or container that drops them)
            _send(write_end, pickle.dumps((False, JanitorError(
                f"cannot act as {creds.describe()}: {exc.strerror}; janitor needs CAP_SETUID and "
                "CAP_SETGID to act as a directory's owner (docs/security.md)", code="E_SU_FAILED"))))
            return
        # After the id change (commit_creds clears it): die with the parent, so nothing this
        # child holds (an inherited lock descriptor) outlives it.
        _set_pdeathsig()
        if os.getppid() != parent:
            os._exit(1)
        try:
            payload = pickle.dumps((True, step()))
        except (OSError, JanitorError) as exc:  # the step's own failure travels back to the parent
            try:
                payload = pickle.dumps((False, exc))
            except Exception:
                payload = pickle.dumps((False, JanitorError(f"{type(exc).__name__}: {exc}", code="E_SU_FAILED")))
        except BaseException as exc:  # KeyboardInterrupt, SystemExit, a bug: this step failed, nothing more
            payload = pickle.dumps((False, JanitorError(
                f"the step run as {creds.describe()} failed: {type(exc).__name__}: {exc}", code="E_SU_FAILED")))
        _send(write_end, payload)
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _send(write_end: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(write_end, view):]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stopped(pid: int) -> bool:
    """True when the child `pid` is stopped (SIGSTOP/SIGTSTP/...); the exit is left to reap."""
    try:
        info = os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOHANG)
    except ChildProcessError:
        return False
    return info is not None and info.si_pid == pid


def _reap(pid: int) -> int:
    """Wait for `pid` to end; a child that stops instead is killed. Its wait status."""
    while True:
        _, status = os.waitpid(pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            return status
        _kill(pid)


def register_private_fd(fd: int) -> None:
    """Mark `fd` (janitor's run lock, its catalog) as one an as-owner child must not keep."""
    _private_fds.add(fd)


def unregister_private_fd(fd: int) -> None:
    _private_fds.discard(fd)


_private_fds: set[int] = set()


def run_as(creds: Credentials, step: Callable[[], T]) -> T:
    """Run `step()` with `creds`: in this process for root, else in a forked child.

    The child drops to `creds` (no supplementary groups, real, effective and saved ids) before
    calling `step`, so every file it creates belongs to that account and every permission
    check is that account's. Descriptors are inherited; nothing is looked up by path again.
    The return value, an OSError or a JanitorError come back pickled.

    That account may signal the child. Whatever it does fails this one step, with
    E_SU_FAILED, and nothing else: the child takes SIGINT/SIGTERM/SIGHUP with the default
    action (no KeyboardInterrupt travels back); any other exception in it comes back as a
    JanitorError; a child that is stopped (SIGSTOP) is killed instead of waited for; one
    that dies without a result is reported. The child dies with the parent (PDEATHSIG) and
    closes the descriptors registered with `register_private_fd` first.
    """
    if creds.is_root or (creds.uid == os.geteuid() and creds.gid == os.getegid()):
        return step()
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        _child(creds, step, write_end, parent)
    os.close(write_end)
    chunks = []
    stopped = False
    finished = False
    try:
        poller = select.poll()
        poller.register(read_end, select.POLLIN | select.POLLHUP)
        while True:
            if poller.poll(_POLL_MS):
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
            elif _stopped(pid):
                stopped = True
                break
        finished = True
    finally:
        os.close(read_end)
        if stopped or not finished:  # stopped by its account, or we are being interrupted
            _kill(pid)
        reaped = _reap(pid)
    if stopped:
        raise JanitorError(
            f"the step run as {creds.describe()} was stopped by a signal (by that account?); it was killed "
            "and this file left as it was",
            code="E_SU_FAILED",
        )
    try:
        ok, value = pickle.loads(b"".join(chunks))  # our own child's bytes, written before exit
    except Exception:
        raise JanitorError(
            f"the step run as {creds.describe()} ended without a result ({_describe_status(reaped)})",
            code="E_SU_FAILED",
        ) from None
    if ok:
        return value  # type: ignore[no-any-return,unused-ignore]
    if isinstance(value, (OSError, JanitorError)):
        raise value
    raise JanitorError(f"the step run as {creds.describe()} failed: {type(value).__name__}", code="E_SU_FAILED")


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        try:
            name = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            name = str(os.WTERMSIG(status))
        return f"killed by {name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
