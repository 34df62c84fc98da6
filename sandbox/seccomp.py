"""The seccomp profile of a sandbox container that runs as root: no setuid/setgid file can be made.

A container running as root (the CLI run as root on a root-owned checkout, as in CI) writes
root-owned files into the bind-mounted workspace. Root needs no capability to set the setuid bit
on a file it owns, so without this profile the sandbox could leave a setuid-root program there
for any host user to run. Sweeping the workspace after each command closed that hole but cost a
``docker exec`` and a walk of the whole tree per command, and missed files a background process
made between two sweeps. This profile makes the kernel refuse, with EPERM, every system call that
would give a file one of those bits: ``chmod``/``fchmod``/``fchmodat``/``fchmodat2`` with the bit
in the mode, ``open``/``openat``/``creat`` creating a file (``O_CREAT`` or ``O_TMPFILE``) with it,
and ``mknod``/``mknodat`` with it. Calls whose arguments seccomp cannot inspect are refused
outright so nothing gets around the check: ``openat2`` (its mode is in a struct; ENOSYS makes libc
fall back to ``openat``) and io_uring (which can open files without a system call per file).

It replaces Docker's default profile for such containers, so it also keeps what matters of that
one with all capabilities dropped: no new user namespaces (in one, root regains capabilities such
as setting file capabilities that the host would honour), no kernel keyring, ``bpf``,
``perf_event_open`` or ``userfaultfd``. ``clone3`` answers ENOSYS (its flags are in a struct), so
libc uses ``clone``, whose flags are checked. Everything else is allowed: the container's other
limits (no capabilities, no-new-privileges, cgroup limits, no network) stay as they are.
System calls newer than the engine's seccomp library knows answer ENOSYS (runc does this for any
profile), so a future chmod-like call cannot slip through either.
"""

from __future__ import annotations

import json
from typing import Any

S_ISUID = 0o4000
S_ISGID = 0o2000
O_CREAT = 0o100
O_TMPFILE = 0o20000000  # the __O_TMPFILE bit (O_TMPFILE also sets O_DIRECTORY)
CLONE_NEWUSER = 0x10000000
EPERM = 1
ENOSYS = 38

# (syscall, index of its mode argument, index of its flags argument or None)
_MODE_CALLS: tuple[tuple[str, int, int | None], ...] = (
    ("chmod", 1, None),
    ("fchmod", 1, None),
    ("fchmodat", 2, None),
    ("fchmodat2", 2, None),
    ("creat", 1, None),
    ("mknod", 1, None),
    ("mknodat", 2, None),
    ("open", 2, 1),
    ("openat", 3, 2),
)
_REFUSED = ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
            "io_uring_setup", "io_uring_enter", "io_uring_register")
_NOT_IMPLEMENTED = ("openat2", "clone3")


def _masked(index: int, bit: int) -> dict[str, Any]:
    """Argument ``index`` has ``bit`` set."""
    return {"index": index, "value": bit, "valueTwo": bit, "op": "SCMP_CMP_MASKED_EQ"}


def _deny(names: list[str], errno: int, args: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno}
    if args:
        rule["args"] = args
    return rule


def no_setid_profile() -> dict[str, Any]:
    """The profile as Docker's engine API takes it (``SecurityOpt: ["seccomp=<json>"]``)."""
    rules: list[dict[str, Any]] = []
    for name, mode_arg, flags_arg in _MODE_CALLS:
        for bit in (S_ISUID, S_ISGID):
            if flags_arg is None:
                rules.append(_deny([name], EPERM, [_masked(mode_arg, bit)]))
            else:  # the mode only counts when the call creates a file
                for creating in (O_CREAT, O_TMPFILE):
                    rules.append(_deny([name], EPERM, [_masked(flags_arg, creating), _masked(mode_arg, bit)]))
    rules.append(_deny(["unshare"], EPERM, [_masked(0, CLONE_NEWUSER)]))
    rules.append(_deny(["clone"], EPERM, [_masked(0, CLONE_NEWUSER)]))
    rules.append(_deny(list(_REFUSED), EPERM))
    rules.append(_deny(list(_NOT_IMPLEMENTED), ENOSYS))
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": rules,
    }


def security_opt() -> str:
    """The ``security_opt`` entry that applies :func:`no_setid_profile` to a new container."""
    return "seccomp=" + json.dumps(no_setid_profile(), separators=(",", ":"))
