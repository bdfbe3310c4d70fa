"""cgroup limits and accounting for sandboxes, on cgroup v1, v2 or both.

At startup the runner finds the cgroup hierarchies this process can use (from
/proc/self/mountinfo and /proc/self/cgroup) and, under its own cgroup in each,
a directory `aecl/` holding one cgroup per sandbox. Each sandbox cgroup is
named `<sandbox_id>.<deadline>` (Unix seconds): anyone, including a later
instance of the service, can tell when it must be dead (`sweep`).

What is used where:
  limits      memory (memory.limit_in_bytes | memory.max), pids (pids.max),
              cpu (cpu.cfs_quota_us | cpu.max): v1 or v2, wherever the
              controller is attached;
  accounting  CPU time (cpuacct.usage | cpu.stat usage_usec), peak memory
              (memory.max_usage_in_bytes | memory.peak), OOM kills and pid-cap
              hits (memory.oom_control | memory.events, pids.events);
  killing     cgroup.kill (v2) where it exists, else SIGKILL to each member,
              checked through a pidfd so a recycled pid is never hit.

A process is placed by writing its pid to cgroup.procs: the runner does it for
bubblewrap's sandbox init while bubblewrap waits on --block-fd, so the tool and
everything it forks start inside.

Totals: optional limits on the `aecl/` parent itself (memory, pids), which
bound all sandboxes together; written at startup wherever the controller is
attached, handled like the per-sandbox limits when the machine refuses them.
"""

from __future__ import annotations

import errno
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path

from enforcer.errors import SandboxError

LIMIT_CONTROLLERS = ("memory", "pids", "cpu")
ACCOUNTING_CONTROLLERS = ("cpuacct",)  # v1 only; v2 has cpu.stat in every cgroup
CPU_PERIOD_US = 100_000
SANDBOX_DIR_RE = re.compile(r"^(sbx_[0-9a-f]{32})\.(\d+)$")


@dataclass(frozen=True)
class Hierarchy:
    version: int                  # 1 or 2
    controllers: frozenset[str]   # the controllers of interest it carries
    base: Path                    # .../<own cgroup>/aecl


@dataclass(frozen=True)
class Usage:
    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None
    oom_kills: int = 0
    pids_max_hits: int = 0
    peak_pids: int | None = None


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _keyed(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


def _int(text: str | None) -> int | None:
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def own_cgroup_dirs(mountinfo: str, proc_cgroup: str) -> list[tuple[int, frozenset[str], Path]]:
    """(version, controllers, directory of this process's cgroup) for every
    mounted cgroup hierarchy this process is in."""
    v1_paths: dict[str, str] = {}
    v2_path: str | None = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        else:
            for c in parts[1].split(","):
                v1_paths[c] = parts[2]
    out, seen = [], set()
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        root, mount_point, fstype, superopts = _unescape(fields[3]), _unescape(fields[4]), rfields[0], rfields[2]
        if fstype == "cgroup2":
            ctrls, path = frozenset(), v2_path
            key = ("v2",)
        elif fstype == "cgroup":
            ctrls = frozenset(o for o in superopts.split(",") if o in LIMIT_CONTROLLERS + ACCOUNTING_CONTROLLERS)
            if not ctrls:
                continue
            path = v1_paths.get(next(iter(ctrls)))
            key = ("v1", ctrls)
        else:
            continue
        if path is None or key in seen:
            continue
        rel = os.path.relpath(path, root) if root != "/" else path.lstrip("/")
        if rel.startswith(".."):
            continue  # our cgroup is not visible through this mount
        seen.add(key)
        out.append((2 if fstype == "cgroup2" else 1, ctrls, Path(mount_point) / rel if rel != "." else Path(mount_point)))
    return out


def _limit_files(version: int, controllers: frozenset[str], limits) -> list[tuple[str, str, bool]]:
    """(file, value, required) to write in a new sandbox cgroup."""
    out: list[tuple[str, str, bool]] = []
    if "memory" in controllers and limits.memory_bytes:
        if version == 1:
            out += [("memory.limit_in_bytes", str(limits.memory_bytes), True),
                    ("memory.memsw.limit_in_bytes", str(limits.memory_bytes), False)]
        else:
            out += [("memory.max", str(limits.memory_bytes), True), ("memory.swap.max", "0", False)]
    if "pids" in controllers and limits.pids:
        out.append(("pids.max", str(limits.pids), True))
    if "cpu" in controllers and limits.cpus:
        quota = max(1000, int(limits.cpus * CPU_PERIOD_US))
        if version == 1:
            out += [("cpu.cfs_period_us", str(CPU_PERIOD_US), True), ("cpu.cfs_quota_us", str(quota), True)]
        else:
            out.append(("cpu.max", f"{quota} {CPU_PERIOD_US}", True))
    return out


# The totals on the aecl/ parent: name -> controller.
TOTAL_CONTROLLERS = {"total_memory": "memory", "total_pids": "pids"}


def _total_files(version: int, controller: str, value: int) -> list[tuple[str, str, bool]]:
    """(file, value, required) to write on the aecl/ parent for one total."""
    if controller == "memory":
        if version == 1:
            # memsw must stay >= limit_in_bytes, and the parent may hold an
            # earlier value: written on both sides so that raising and lowering work.
            return [("memory.memsw.limit_in_bytes", str(value), False), ("memory.limit_in_bytes", str(value), True),
                    ("memory.memsw.limit_in_bytes", str(value), False)]
        return [("memory.max", str(value), True), ("memory.swap.max", "0", False)]
    return [("pids.max", str(value), True)]


@dataclass
class CgroupSupport:
    hierarchies: list[Hierarchy] = field(default_factory=list)
    applied: dict[str, str] = field(default_factory=dict)   # limit -> "cgroup v1" / "cgroup v2"
    missing: dict[str, str] = field(default_factory=dict)   # limit -> why not
    limits: object = None
    # The totals on the aecl/ parent(s): total_memory / total_pids -> where
    # written, or -> why not.
    totals_applied: dict[str, str] = field(default_factory=dict)
    totals_missing: dict[str, str] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.hierarchies)

    @property
    def can_freeze(self) -> bool:
        """A cgroup v2 hierarchy is used: sandboxes can be frozen (cgroup.freeze)."""
        return any(h.version == 2 for h in self.hierarchies)

    def describe(self) -> str:
        parts = [f"{k} ({v})" for k, v in self.applied.items()]
        gone = [f"{k}: {v}" for k, v in self.missing.items()]
        s = "cgroup limits " + (", ".join(parts) if parts else "none")
        if gone:
            s += "; not applied: " + "; ".join(gone)
        if self.totals_applied or self.totals_missing:
            s += "; parent limits " + (", ".join(f"{k}={v}" for k, v in self.totals_applied.items()) or "none")
            if self.totals_missing:
                s += "; parent limits not applied: " + "; ".join(f"{k}: {v}" for k, v in self.totals_missing.items())
        if self.hierarchies:
            s += "; sandboxes under " + ", ".join(str(h.base) for h in self.hierarchies)
        return s

    @classmethod
    def detect(cls, limits, *, mountinfo: str | None = None, proc_cgroup: str | None = None,
               dirname: str = "aecl", total_memory_bytes: int | None = None,
               total_pids: int | None = None) -> CgroupSupport:
        """`total_*`: limits on the `dirname` parent(s) themselves, bounding
        all sandboxes together (None: not written, whatever is there stays)."""
        want = {"memory": limits.memory_bytes, "pids": limits.pids, "cpu": limits.cpus}
        want = {k for k, v in want.items() if v}
        totals = {k: v for k, v in (("total_memory", total_memory_bytes), ("total_pids", total_pids)) if v}
        # Hierarchies needed: for the per-sandbox limits and for the totals.
        need = want | {TOTAL_CONTROLLERS[k] for k in totals}
        sup = cls(limits=limits)
        if limits.cgroups == "off":
            for k in sorted(want):
                sup.missing[k] = "cgroups are off in the profile"
            for k in totals:
                sup.totals_missing[k] = "cgroups are off in the profile"
            return sup
        try:
            mountinfo = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
            proc_cgroup = proc_cgroup if proc_cgroup is not None else Path("/proc/self/cgroup").read_text()
        except OSError as e:
            for k in sorted(need):
                sup.missing[k] = f"cannot read this process's cgroups: {e}"
            sup._split_totals(want, totals)
            return sup._check_required()
        found = own_cgroup_dirs(mountinfo, proc_cgroup)
        if any(v == 2 for v, _, _ in found):
            # v2 has cpu.stat in every cgroup: no need for v1 cpuacct as well.
            found = [(v, c - {"cpuacct"}, d) for v, c, d in found]
        v1_ctrls = set().union(*(c for v, c, _ in found if v == 1)) if found else set()
        for version, ctrls, own in found:
            if version == 2:
                ctrls = frozenset(_v2_enable(own, (need - v1_ctrls), sup))
            usable = ctrls & (need | set(ACCOUNTING_CONTROLLERS))
            if version == 1 and not usable:
                continue
            base = own / dirname
            try:
                base.mkdir(exist_ok=True)
                if version == 2 and ctrls:
                    _write(base / "cgroup.subtree_control", " ".join("+" + c for c in sorted(ctrls)))
                _probe(base, version, frozenset(usable), limits)
            except OSError as e:
                for c in sorted(usable & need):
                    sup.missing[c] = f"cgroup v{version} at {own}: {e.strerror or e}"
                continue
            sup.hierarchies.append(Hierarchy(version, frozenset(usable), base))
            for c in sorted(usable & need):
                sup.applied[c] = f"cgroup v{version}"
                sup.missing.pop(c, None)
        for c in sorted(need - set(sup.applied)):
            sup.missing.setdefault(c, "no cgroup hierarchy with this controller is usable here")
        sup._split_totals(want, totals)
        return sup._check_required()

    def _split_totals(self, want: set[str], totals: dict[str, int]) -> None:
        """Write the totals on the parents; keep in `applied`/`missing` only
        the per-sandbox limits (a controller can be there for a total alone)."""
        for k, value in totals.items():
            ctrl = TOTAL_CONTROLLERS[k]
            where = [h for h in self.hierarchies if ctrl in h.controllers]
            if not where:
                self.totals_missing[k] = self.missing.get(ctrl, "no cgroup hierarchy with this controller is usable here")
                continue
            try:
                for h in where:
                    for fname, v, required in _total_files(h.version, ctrl, value):
                        try:
                            _write(h.base / fname, v)
                        except OSError:
                            if required:
                                raise
                self.totals_applied[k] = f"{value} (cgroup v{where[0].version})"
            except OSError as e:
                self.totals_missing[k] = f"cgroup v{h.version} at {h.base}: {e.strerror or e}"
        for c in list(self.applied):
            if c not in want:
                del self.applied[c]
        for c in list(self.missing):
            if c not in want:
                del self.missing[c]

    def _check_required(self) -> CgroupSupport:
        if self.limits.cgroups == "required" and (self.missing or self.totals_missing):
            gone = {**self.missing, **self.totals_missing}
            raise SandboxError("the sandbox profile requires cgroup limits that this machine does not allow: "
                               + "; ".join(f"{k}: {v}" for k, v in gone.items()))
        return self

    # -- per sandbox ---------------------------------------------------------

    def create(self, name: str) -> SandboxCgroup:
        made: list[tuple[Hierarchy, Path]] = []
        try:
            for h in self.hierarchies:
                d = h.base / name
                d.mkdir()
                made.append((h, d))
                for fname, value, required in _limit_files(h.version, h.controllers, self.limits):
                    try:
                        _write(d / fname, value)
                    except OSError:
                        if required:
                            raise
        except OSError as e:
            SandboxCgroup(made).remove()
            raise SandboxError(f"cannot create the sandbox's cgroup {name}: {e}") from e
        return SandboxCgroup(made)

    def sweep(self, now: float, *, stale_after_s: float = 60.0) -> list[str]:
        """Kill and remove sandbox cgroups whose deadline has passed: the
        lifetime kill switch, from the kernel's view of what is running, not
        from the runner's bookkeeping. Also removes empty sandbox cgroups
        older than `stale_after_s` (left by a service that was killed).
        Returns the sandbox ids killed."""
        names: set[str] = set()
        for h in self.hierarchies:
            try:
                names.update(n for n in os.listdir(h.base) if SANDBOX_DIR_RE.match(n))
            except OSError:
                continue
        killed = []
        for n in sorted(names):
            cg = SandboxCgroup([(h, h.base / n) for h in self.hierarchies if (h.base / n).is_dir()])
            if int(SANDBOX_DIR_RE.match(n).group(2)) <= now:
                if cg.kill():
                    killed.append(n.split(".")[0])
                cg.remove()
            elif not cg.pids() and all(_older(d, now - stale_after_s) for _, d in cg.dirs):
                cg.remove()
        return killed


def _older(path: Path, than: float) -> bool:
    try:
        return path.stat().st_mtime < than
    except OSError:
        return False


def _v2_enable(own: Path, wanted: set[str], sup: CgroupSupport) -> set[str]:
    """Enable the wanted controllers for children of our own v2 cgroup, where
    cgroup v2 allows it (the root cgroup, or a delegated cgroup without
    processes of its own). Returns what is enabled."""
    if not wanted:
        return set()
    available = set((_read(own / "cgroup.controllers") or "").split())
    enabled = set((_read(own / "cgroup.subtree_control") or "").split())
    for c in sorted(wanted - available):
        sup.missing[c] = f"cgroup v2 at {own}: controller not delegated to this cgroup"
    todo = (wanted & available) - enabled
    if todo:
        try:
            _write(own / "cgroup.subtree_control", " ".join("+" + c for c in sorted(todo)))
        except OSError as e:
            why = ("the service's own cgroup holds processes (v2's no-internal-process rule): start it in a "
                   "leaf of a delegated cgroup, e.g. systemd Delegate=yes with DelegateSubgroup=") \
                if e.errno == errno.EBUSY else (e.strerror or str(e))
            for c in sorted(todo):
                sup.missing[c] = f"cgroup v2 at {own}: {why}"
            return enabled & wanted
    return (enabled | todo) & wanted


def _probe(base: Path, version: int, controllers: frozenset[str], limits) -> None:
    """Create, limit, and remove a throwaway cgroup: what startup reports as
    applicable must really be."""
    probe = base / f"probe-{os.getpid()}-{os.urandom(4).hex()}"
    probe.mkdir()
    try:
        for fname, value, required in _limit_files(version, controllers, limits):
            try:
                _write(probe / fname, value)
            except OSError:
                if required:
                    raise
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass


class SandboxCgroup:
    def __init__(self, dirs: list[tuple[Hierarchy, Path]]) -> None:
        self.dirs = dirs

    def attach(self, pid: int) -> None:
        for _, d in self.dirs:
            _write(d / "cgroup.procs", str(pid))

    def freeze(self, frozen: bool) -> bool:
        """Freeze (or thaw) everything in the sandbox through cgroup v2's
        cgroup.freeze; True if done. Once the write returns, no process of
        the cgroup runs user code until thawed; SIGKILL still kills them."""
        for h, d in self.dirs:
            if h.version == 2 and (d / "cgroup.freeze").exists():
                _write(d / "cgroup.freeze", "1" if frozen else "0")
                return True
        return False

    def pids(self) -> list[int]:
        for _, d in self.dirs:
            text = _read(d / "cgroup.procs")
            if text is not None:
                return [int(p) for p in text.split()]
        return []

    def usage(self) -> Usage:
        u: dict = {}
        for h, d in self.dirs:
            if h.version == 2:
                usec = _keyed(_read(d / "cpu.stat"), "usage_usec")
                if usec is not None:
                    u["cpu_time_s"] = usec / 1e6
                if "memory" in h.controllers:
                    u["peak_memory_bytes"] = _int(_read(d / "memory.peak"))
                    u["oom_kills"] = _keyed(_read(d / "memory.events"), "oom_kill") or 0
            else:
                if "cpuacct" in h.controllers:
                    ns = _int(_read(d / "cpuacct.usage"))
                    if ns is not None:
                        u["cpu_time_s"] = ns / 1e9
                if "memory" in h.controllers:
                    u["peak_memory_bytes"] = _int(_read(d / "memory.max_usage_in_bytes"))
                    u["oom_kills"] = _keyed(_read(d / "memory.oom_control"), "oom_kill") or 0
            if "pids" in h.controllers:
                u["pids_max_hits"] = _keyed(_read(d / "pids.events"), "max") or 0
                u["peak_pids"] = _int(_read(d / "pids.peak"))
        return Usage(**{k: v for k, v in u.items() if v is not None})

    def kill(self) -> bool:
        """SIGKILL everything in the sandbox's cgroup, without waiting for it
        to die. True if anything was there. A killed process cannot fork
        (a pending SIGKILL fails fork), so re-reading until no new member
        shows up ends quickly even against a fork bomb."""
        for h, d in self.dirs:
            if h.version == 2 and (d / "cgroup.kill").exists():
                found = bool(self.pids())
                try:
                    _write(d / "cgroup.kill", "1")
                    return found
                except OSError:
                    break
        signalled: set[int] = set()
        for _ in range(100):
            fresh = [p for p in self.pids() if p not in signalled]
            if not fresh:
                break
            for pid in fresh:
                _kill_member(pid, self.dirs)
                signalled.add(pid)
        return bool(signalled)

    def remove(self) -> bool:
        ok = True
        for _, d in self.dirs:
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok


def _kill_member(pid: int, dirs: list[tuple[Hierarchy, Path]]) -> None:
    """SIGKILL pid only if it is (still) in one of our cgroups: a pidfd pins
    the process, then its membership is checked, so a pid recycled between
    reading cgroup.procs and the kill is never signalled."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return
        names = {d.name for _, d in dirs}
        mine = any(line.rsplit("/", 1)[-1] in names for line in text.splitlines())
        if mine:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        os.close(pidfd)
