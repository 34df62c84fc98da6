"""A second, real Docker engine that cannot see this machine's files, for the remote-engine tests.

It is Debian's ``dockerd`` in a container of ``kimi-code-dind:offline`` (the offline sandbox image
built by debootstrap with ``docker.io`` added: ``tests/run.sh`` builds it), listening on a port
published on 127.0.0.1 only, with the sandbox test image loaded into it by ``docker save | docker
load``. Its containers live in that container's own file system, so a bind mount of a host path
would find nothing there: exactly a build server's or a cloud VM's engine.

The engine container gets every capability this machine grants (``--privileged`` asks for all of
them, and fails where the machine withholds one, as here with CAP_SYS_RESOURCE), no seccomp or
AppArmor confinement, and its cgroup hierarchies mounted writable, which is what ``--privileged``
gives a nested ``dockerd``.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

DIND_IMAGE = os.environ.get("KIMI_CODE_DIND_IMAGE", "kimi-code-dind:offline")

# Capability bits as the kernel numbers them (linux/capability.h), as Docker names them.
_CAPS = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
         "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
         "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME "
         "SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG "
         "WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF CHECKPOINT_RESTORE").split()

# Run in the engine container: cgroup v1 hierarchies remounted writable (or cgroup2), then dockerd.
_ENTRY = r"""
set -u
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
  umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
else
  awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) == "cgroup") print $5, $(i+3); break } }' \
      /proc/self/mountinfo |
  while read -r mp opts; do
    umount "$mp" && mount -t cgroup -o "${opts#rw,}" cgroup "$mp" || echo "cannot remount $mp" >&2
  done
fi
exec dockerd -H tcp://0.0.0.0:2375 --tls=false --cgroup-parent=/kimi-code-test-engine
"""


def _missing_caps() -> list[str]:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            bits = int(line.split()[1], 16)
            return [name for i, name in enumerate(_CAPS) if not bits >> i & 1]
    return []


def _docker(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})})


class RemoteEngine:
    """A started engine: ``url`` is its DOCKER_HOST; ``stop()`` removes it with everything in it."""

    def __init__(self, sandbox_image: str) -> None:
        self.sandbox_image = sandbox_image
        self.name = f"kimi-code-test-engine-{uuid.uuid4().hex[:8]}"
        self.url = ""

    def start(self) -> "RemoteEngine":
        if _docker("image", "inspect", DIND_IMAGE).returncode != 0:
            raise RuntimeError(f"the engine image {DIND_IMAGE} is missing: `bash tests/run.sh` builds it "
                               "(KIMI_CODE_EXTRA_PACKAGES=docker.io,iptables bash sandbox/build-offline-image.sh "
                               f"{DIND_IMAGE})")
        drops = [f"--cap-drop={c}" for c in _missing_caps()]
        run = _docker("run", "-d", "--name", self.name, "--cap-add=ALL", *drops,
                      "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
                      "--security-opt", "systempaths=unconfined", "--label", "kimi-code.test-engine=1",
                      "-p", "127.0.0.1::2375", "-v", "/var/lib/docker", DIND_IMAGE, "sh", "-c", _ENTRY)
        if run.returncode != 0:
            raise RuntimeError(f"cannot start the engine container: {run.stderr.strip()}")
        port = _docker("port", self.name, "2375").stdout.split(":")[-1].strip()
        self.url = f"tcp://127.0.0.1:{port}"
        env = {"DOCKER_HOST": self.url}
        deadline = time.monotonic() + 90
        while _docker("info", env=env, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                logs = _docker("logs", "--tail", "20", self.name).stderr
                self.stop()
                raise RuntimeError(f"the engine in {self.name} did not come up:\n{logs}")
            time.sleep(0.5)
        save = subprocess.Popen(["docker", "save", self.sandbox_image], stdout=subprocess.PIPE,
                                env={k: v for k, v in os.environ.items() if k != "DOCKER_HOST"})
        load = subprocess.run(["docker", "load"], stdin=save.stdout, capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=600)
        save.wait(timeout=600)
        if load.returncode != 0 or save.returncode != 0:
            self.stop()
            raise RuntimeError(f"cannot load {self.sandbox_image} into the engine: {load.stderr.strip()}")
        return self

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The docker CLI against this engine."""
        return _docker(*args, env={"DOCKER_HOST": self.url}, timeout=timeout)

    def stop(self) -> None:
        _docker("rm", "-f", "-v", self.name, timeout=120)
