"""Starting the traced command, and the privileges it runs with.

The command is forked early but held at a gate (a pipe) until every probe is
attached and its pid is in the BPF follow map, so no event of its start is
missed.  Under sudo it runs as the invoking user (SUDO_UID/SUDO_GID), never
as root, with that user's groups, HOME and PATH lookup.
"""
from __future__ import annotations

import errno
import os
import pwd
import shutil
import signal
from dataclasses import dataclass
from typing import Dict, List, Optional, Set

from .errors import ZaptraceError


class SpawnError(ZaptraceError):
    pass


@dataclass
class Identity:
    """Who the traced command runs as."""

    uid: int
    gid: int
    user: Optional[str]
    groups: List[int]
    home: Optional[str]

    @property
    def drops_root(self) -> bool:
        return os.geteuid() == 0 and self.uid != 0


def invoking_identity(env: Optional[Dict[str, str]] = None) -> Identity:
    """The user behind sudo, or the current user."""
    env = os.environ if env is None else env
    uid_s, gid_s = env.get("SUDO_UID"), env.get("SUDO_GID")
    if os.geteuid() == 0 and uid_s and uid_s.isdigit():
        uid = int(uid_s)
        try:
            pw = pwd.getpwuid(uid)
            name, home, pgid = pw.pw_name, pw.pw_dir, pw.pw_gid
        except KeyError:
            name, home, pgid = env.get("SUDO_USER"), None, uid
        gid = int(gid_s) if gid_s and gid_s.isdigit() else pgid
        try:
            groups = os.getgrouplist(name, gid) if name else [gid]
        except (OSError, TypeError):
            groups = [gid]
        return Identity(uid, gid, name, groups, home)
    return Identity(os.getuid(), os.getgid(), None, os.getgroups(), None)


def resolve_command(argv: List[str], env: Optional[Dict[str, str]] = None) -> str:
    """The executable argv[0] names, checked before any probe is attached."""
    if not argv:
        raise SpawnError("no command given")
    cmd = argv[0]
    env = os.environ if env is None else env
    if "/" in cmd:
        if not os.path.exists(cmd):
            raise SpawnError(f"command not found: {cmd}")
        if os.path.isdir(cmd):
            raise SpawnError(f"command is a directory: {cmd}")
        if not os.access(cmd, os.X_OK):
            raise SpawnError(f"command is not executable: {cmd}")
        return cmd
    found = shutil.which(cmd, path=env.get("PATH", os.defpath))
    if not found:
        raise SpawnError(f"command not found: {cmd} (searched PATH)")
    return found


class GatedChild:
    """A forked child that execs the command only when released."""

    def __init__(self, path: str, argv: List[str], ident: Identity, env: Dict[str, str]):
        self.path = path
        r_go, w_go = os.pipe()
        r_err, w_err = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            try:
                os.close(w_go)
                os.close(r_err)
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                go = os.read(r_go, 1)
                if go != b"g":
                    os._exit(0)
                os.close(r_go)
                # Only the error pipe survives (CLOEXEC): BPF and trace fds stay with us.
                os.closerange(3, w_err)
                os.closerange(w_err + 1, 65536)
                os.set_inheritable(w_err, False)
                if ident.drops_root:
                    os.setgroups(ident.groups)
                    os.setgid(ident.gid)
                    os.setuid(ident.uid)
                os.execve(path, argv, env)
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                err = getattr(e, "errno", None) or 0
                msg = f"{err}:{getattr(e, 'strerror', None) or e}"
                try:
                    os.write(w_err, msg.encode(errors="replace")[:512])
                finally:
                    os._exit(127)
        os.close(r_go)
        os.close(w_err)
        self.pid = pid
        self._go = w_go
        self._err = r_err
        self.status: Optional[int] = None

    def release(self) -> None:
        """Let the child exec; raise SpawnError if exec fails or the child died waiting."""
        try:
            os.write(self._go, b"g")
        except BrokenPipeError:
            os.close(self._go)
            os.close(self._err)
            code = self.wait()
            how = f"killed by {signal.Signals(code - 128).name}" if code > 128 else f"status {code}"
            raise SpawnError(f"the command's process died before it could start ({how})") from None
        os.close(self._go)
        data = b""
        while True:
            chunk = os.read(self._err, 512)
            if not chunk:
                break
            data += chunk
        os.close(self._err)
        if data:
            self.wait()
            code, _, msg = data.decode(errors="replace").partition(":")
            if code.isdigit() and int(code) == errno.EACCES:
                msg = "permission denied"
            raise SpawnError(f"cannot run {self.path}: {msg}")

    def abandon(self) -> None:
        """Let the child go without exec (probes failed to attach)."""
        try:
            os.close(self._go)
        except OSError:
            pass
        try:
            os.close(self._err)
        except OSError:
            pass
        self.wait()

    def poll(self) -> Optional[int]:
        if self.status is None:
            try:
                pid, st = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.status = 0
                return self.status
            if pid:
                self.status = exit_code(st)
        return self.status

    def wait(self) -> int:
        if self.status is None:
            try:
                _pid, st = os.waitpid(self.pid, 0)
                self.status = exit_code(st)
            except ChildProcessError:
                self.status = 0
        return self.status

    def signal(self, sig: int) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def exit_code(wait_status: int) -> int:
    """Shell-style exit code: N, or 128+signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 1


def descendants(root: int) -> Set[int]:
    """root and every process below it now (from /proc/*/stat)."""
    children: Dict[int, List[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        rest = stat[stat.rfind(b")") + 2:].split()
        if len(rest) > 1:
            children.setdefault(int(rest[1]), []).append(int(d))
    out, todo = set(), [root]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.add(p)
        todo.extend(children.get(p, []))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] == b"Z"


def chown_to(path: str, ident: Identity) -> None:
    if ident.drops_root:
        try:
            os.chown(path, ident.uid, ident.gid)
        except OSError:
            pass


def child_env(ident: Identity, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ if base is None else base)
    if ident.drops_root and ident.user:
        env["USER"] = env["LOGNAME"] = ident.user
        if ident.home:
            env["HOME"] = ident.home
    return env

