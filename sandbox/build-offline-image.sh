#!/usr/bin/env bash
# Build the kimi-code sandbox image without any container registry:
#   bash sandbox/build-offline-image.sh [IMAGE]        (default kimi-code-sandbox:offline)
#
# debootstrap installs a minimal Debian with Python, git, ripgrep and build tools from this machine's
# own apt mirror, and `docker import` turns that directory into an image. Needs root, debootstrap and
# a running Docker daemon. Environment overrides:
#   KIMI_CODE_DEBIAN_MIRROR   mirror URL (default: the first non-security one in this machine's apt sources)
#   KIMI_CODE_DEBIAN_SUITE    Debian release (default bookworm)
#   KIMI_CODE_DEBOOTSTRAP_CACHE  where downloaded .debs are kept between builds
#                             (default /var/cache/kimi-code/debootstrap; "none" disables the cache)
#   KIMI_CODE_EXTRA_PACKAGES  more packages to include, comma-separated
set -euo pipefail

IMAGE="${1:-kimi-code-sandbox:offline}"
SUITE="${KIMI_CODE_DEBIAN_SUITE:-bookworm}"
CACHE="${KIMI_CODE_DEBOOTSTRAP_CACHE:-/var/cache/kimi-code/debootstrap}"
PACKAGES="bash,coreutils,procps,ca-certificates,python3,python3-venv,python3-pip,python3-dev,git,ripgrep"
PACKAGES+=",build-essential,curl,less,patch,file,xz-utils,unzip,findutils,grep,sed,diffutils"
if [ -n "${KIMI_CODE_EXTRA_PACKAGES:-}" ]; then PACKAGES+=",${KIMI_CODE_EXTRA_PACKAGES}"; fi

log() { printf '[build-offline-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The first Debian mirror this machine's apt uses for its main (non-security) archive.
detect_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    # deb822 stanzas are separated by blank lines; skip disabled ones and security suites.
    uri=$(awk 'BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          split(line, kv, ":")
          key = tolower(kv[1]); val = substr(line, length(kv[1]) + 2)
          gsub(/^[ \t]+|[ \t]+$/, "", val)
          if (key == "types") types = val
          else if (key == "uris") uris = val
          else if (key == "suites") suites = val
          else if (key == "enabled") enabled = tolower(val)
        }
        if (enabled == "no" || types !~ /(^|[ \t])deb([ \t]|$)/ || suites ~ /security/) next
        split(uris, u, /[ \t]+/)
        if (u[1] != "" && u[1] !~ /security/) { print u[1]; exit }
      }' "$f")
    if [ -n "$uri" ]; then printf '%s\n' "$uri"; return 0; fi
  done
  if [ -r /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($i !~ /security/ && $(i + 1) !~ /security/) { print $i; exit }
      }' /etc/apt/sources.list)
    if [ -n "$uri" ]; then printf '%s\n' "$uri"; return 0; fi
  fi
  return 1
}

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap needs it)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed (apt-get install docker.io)"
docker info >/dev/null 2>&1 || die "no Docker daemon reachable (start dockerd)"

MIRROR="${KIMI_CODE_DEBIAN_MIRROR:-}"
if [ -z "$MIRROR" ]; then
  MIRROR=$(detect_mirror) || die "no Debian mirror in /etc/apt/sources.list(.d); set KIMI_CODE_DEBIAN_MIRROR"
fi

WORK=$(mktemp -d /var/tmp/kimi-code-rootfs.XXXXXX)
cleanup() { rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT
ROOTFS="$WORK/rootfs"

CACHE_ARGS=()
if [ "$CACHE" != none ]; then
  mkdir -p "$CACHE"
  CACHE_ARGS=(--cache-dir="$(cd "$CACHE" && pwd)")
fi

start=$(date +%s)
log "debootstrap $SUITE from $MIRROR into $ROOTFS"
# dpkg inside the new tree need not fsync every file: the tree is thrown away if the build fails.
mkdir -p "$ROOTFS/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$ROOTFS/etc/dpkg/dpkg.cfg.d/kimi-code-build"
if ! debootstrap --variant=minbase --include="$PACKAGES" "${CACHE_ARGS[@]}" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
  tail -n 30 "$WORK/debootstrap.log" >&2
  [ -f "$ROOTFS/debootstrap/debootstrap.log" ] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
  die "debootstrap failed (log above)"
fi

log "debootstrap done after $(( $(date +%s) - start ))s"

# Slim the tree: package caches, apt lists and docs are not needed at run time.
rm -f "$ROOTFS/etc/dpkg/dpkg.cfg.d/kimi-code-build"
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
  "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
mkdir -p "$ROOTFS/workspace"
chmod 1777 "$ROOTFS/tmp"

log "importing as $IMAGE"
tar --numeric-owner -C "$ROOTFS" --exclude=./dev/* --exclude=./proc/* --exclude=./sys/* -c . \
  | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'WORKDIR /workspace' \
      --change 'CMD ["bash"]' \
      --change "LABEL kimi-code.image=offline kimi-code.suite=$SUITE" \
      --message "kimi-code sandbox image built by debootstrap ($SUITE)" \
      - "$IMAGE" >/dev/null

log "built $IMAGE in $(( $(date +%s) - start ))s"
