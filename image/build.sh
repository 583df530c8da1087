#!/usr/bin/env bash
# Builds the controller's container image without a Docker daemon or a registry:
#
#   make image            # or: image/build.sh
#
# Debian's mmdebstrap makes the root filesystems, pip installs the locked packages into a
# venv, umoci writes the OCI image layout and skopeo checks the archive. Output, in
# build/image/: virtrigaud-VERSION.oci.tar (an oci-archive, tag VERSION), image.json (digests,
# sizes, build time), dpkg-l.txt and python-packages.txt (what is inside).
#
# Reproducible: SOURCE_DATE_EPOCH is the last commit's time, Python packages come from
# image/*.lock with hashes, file times are clamped, CFLAGS=-g0 for the one compiled package.
# Two builds of the same tree against the same Debian archive state give the same digests;
# a Debian point release changes dpkg-l.txt (compared with image/dpkg-l.txt at the end).
#
# Two stages: "deps" (a throwaway Debian root with compilers builds the venv of locked
# packages; cached in ~/.cache/virtrigaud/image by the hash of the locks and this recipe)
# and "runtime" (a Debian root with only what runs, the cached venv, and virtrigaud itself).
# Needs root (mmdebstrap --mode=root, chroot), like CI.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/image/build.sh"
OUT=${VIRTRIGAUD_IMAGE_OUT:-$ROOT/build/image}
CACHE=${VIRTRIGAUD_CACHE_DIR:-$HOME/.cache/virtrigaud}/image
SUITE=bookworm
MIRRORS=(
  "deb http://deb.debian.org/debian $SUITE main"
  "deb http://deb.debian.org/debian $SUITE-updates main"
  "deb http://deb.debian.org/debian-security $SUITE-security main"
)
# Build stage only: compilers and headers for libvirt-python, Debian's pip to bootstrap
# the locked pip.
BUILD_PKGS=python3,python3-venv,python3-dev,python3-pip,gcc,libc6-dev,pkg-config,libvirt-dev
# The image: the interpreter, libvirt's client library (libvirt-python loads it), ssh for
# qemu+ssh:// libvirt URIs, tini as PID 1, CA certificates, /etc/services and friends.
RUNTIME_PKGS=python3,libvirt0,openssh-client,tini,ca-certificates,netbase
HOST_PKGS=(mmdebstrap umoci skopeo iproute2)
VENV=/opt/virtrigaud
IMAGE_USER=65532
IMAGE_HOME=/home/virtrigaud
MERGED_USR=/usr/share/mmdebstrap/hooks/merged-usr

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# mmdebstrap and its hooks are chatty; their output goes to a log shown on failure.
quietly() {
  local name=$1; shift
  if ! "$@" >"$WORK/$name.log" 2>&1; then
    tail -40 "$WORK/$name.log" >&2
    die "$name failed; full log: $WORK/$name.log"
  fi
}

# Commands inside a build chroot get a clean environment: the host's PIP_* settings
# (local indexes, find-links, caps) must not leak in.
in_chroot() {
  local root=$1; shift
  chroot "$root" /usr/bin/env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" PYTHONHASHSEED=0 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    PIP_CERT=/tmp/lock/ca.crt SSL_CERT_FILE=/tmp/lock/ca.crt \
    "$@"
}

# --- deps stage: a venv with every locked runtime package ------------------------------
hook_deps() {
  local root=$1
  mkdir -p "$root/tmp/lock"
  cp "$ROOT/image/requirements.lock" "$ROOT/image/build-requirements.lock" "$root/tmp/lock/"
  # PyPI is reached through this machine's TLS egress, whose CA only the host trusts.
  cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/lock/ca.crt"
  in_chroot "$root" python3 -m venv --without-pip "$VENV"
  # The locked pip, setuptools and wheel go beside the venv, never into it.
  in_chroot "$root" env PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet \
    --no-deps --require-hashes --target /opt/buildtools -r /tmp/lock/build-requirements.lock
  in_chroot "$root" env PYTHONPATH=/opt/buildtools CFLAGS=-g0 \
    "$VENV/bin/python" -m pip install --quiet --no-deps --require-hashes \
    --no-build-isolation --ignore-installed -r /tmp/lock/requirements.lock
  # Other checkouts on this machine share the cache: write aside, then rename.
  tar -C "$root/opt" --sort=name -cf "$DEPS_TAR.$$.part" virtrigaud buildtools
  mv "$DEPS_TAR.$$.part" "$DEPS_TAR"
}

build_deps() {
  log "deps stage: Debian build root + locked venv (cache miss: $DEPS_TAR)"
  mkdir -p "$CACHE"
  quietly deps-stage mmdebstrap --mode=root --variant=apt --hook-dir="$MERGED_USR" \
    --include="$BUILD_PKGS" \
    --customize-hook="DEPS_TAR='$DEPS_TAR' '$SELF' hook-deps \"\$1\"" \
    "$SUITE" /dev/null "${MIRRORS[@]}"
}

# --- runtime stage: the image's root filesystem ----------------------------------------
hook_runtime() {
  local root=$1
  tar -C "$root/opt" -xf "$DEPS_TAR"
  mkdir -p "$root/tmp/src" "$root/tmp/lock"
  cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/lock/ca.crt"
  (cd "$ROOT" && git ls-files -z -- pyproject.toml README.md LICENSE virtrigaud |
    tar --null -T - -cf -) | tar -C "$root/tmp/src" -xf -
  in_chroot "$root" env PYTHONPATH=/opt/buildtools "$VENV/bin/python" -m pip install \
    --quiet --no-deps --no-index --no-build-isolation /tmp/src
  rm -rf "$root/opt/buildtools" "$root/tmp/src" "$root/tmp/lock"
  in_chroot "$root" "$VENV/bin/python" -c '
import importlib.metadata as m
for d in sorted(m.distributions(), key=lambda d: d.metadata["Name"].lower()):
    print(d.metadata["Name"], d.version, sep="==")' >"$WORK/python-packages.txt"
  COLUMNS=200 chroot "$root" dpkg -l >"$WORK/dpkg-l.txt"

  # The chart's user. Written directly: useradd stamps today's date into /etc/shadow.
  echo "virtrigaud:x:$IMAGE_USER:$IMAGE_USER:virtrigaud:$IMAGE_HOME:/usr/sbin/nologin" >>"$root/etc/passwd"
  echo "virtrigaud:x:$IMAGE_USER:" >>"$root/etc/group"
  echo "virtrigaud:!:0:0:99999:7:::" >>"$root/etc/shadow"
  echo "virtrigaud:!::" >>"$root/etc/gshadow"
  install -d -m 0750 -o "$IMAGE_USER" -g "$IMAGE_USER" "$root$IMAGE_HOME"
  # KubeRay starts Ray pods through `bash -lc`, whose login profile resets PATH: `ray`
  # and `virtrigaud` must be on the default PATH too.
  ln -s "$VENV/bin/ray" "$VENV/bin/virtrigaud" "$root/usr/local/bin/"
  # The host's name and resolver are not the image's (the runtime mounts its own).
  rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
  # Files pip wrote carry the build's clock, or the cached venv's, which may be older
  # than the commit (mmdebstrap only clamps newer ones): set them all, so a warm and a
  # cold build give the same layer.
  find "$root/opt" "$root$IMAGE_HOME" "$root/usr/local/bin" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
}

build_runtime() {
  log "runtime stage: Debian root with $RUNTIME_PKGS + venv + virtrigaud"
  quietly runtime-stage mmdebstrap --mode=root --variant=essential --hook-dir="$MERGED_USR" \
    --include="$RUNTIME_PKGS" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --skip=output/dev \
    --customize-hook="DEPS_TAR='$DEPS_TAR' WORK='$WORK' '$SELF' hook-runtime \"\$1\"" \
    "$SUITE" "$WORK/rootfs.tar" "${MIRRORS[@]}"
  # An empty /dev for the runtime to mount over (device nodes are left out above): with a
  # read-only root there would be no mount point otherwise.
  mkdir -p "$WORK/devdir/dev"
  tar -C "$WORK/devdir" --owner=0 --group=0 --numeric-owner --mode=0755 \
    --mtime="@$SOURCE_DATE_EPOCH" --no-recursion -rf "$WORK/rootfs.tar" ./dev
}

# --- OCI image -------------------------------------------------------------------------
write_image() {
  local layout=$WORK/oci created
  created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
  umoci init --layout "$layout"
  umoci new --image "$layout:$VERSION"
  umoci raw add-layer --image "$layout:$VERSION" \
    --history.created "$created" --history.created_by "image/build.sh" "$WORK/rootfs.tar"
  umoci config --image "$layout:$VERSION" --no-history \
    --created "$created" \
    --config.user "$IMAGE_USER:$IMAGE_USER" \
    --config.workingdir "$IMAGE_HOME" \
    --config.env "PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --config.env "HOME=$IMAGE_HOME" \
    --config.env "LANG=C.UTF-8" \
    --config.env "PYTHONUNBUFFERED=1" \
    --config.env "PYTHONDONTWRITEBYTECODE=1" \
    --config.env "RAY_USAGE_STATS_ENABLED=0" \
    --config.entrypoint /usr/bin/tini --config.entrypoint -- --config.entrypoint virtrigaud \
    --config.cmd run \
    --config.label "org.opencontainers.image.title=virtrigaud" \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.revision=$REVISION" \
    --config.label "org.opencontainers.image.created=$created" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0"
  umoci gc --layout "$layout"
  # The oci-archive is a tar of the layout; written here with fixed order, owners and
  # times so the file itself is reproducible, then read back with skopeo.
  tar -C "$layout" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@$SOURCE_DATE_EPOCH" -cf "$WORK/image.oci.tar" .
  skopeo inspect --raw "oci-archive:$WORK/image.oci.tar:$VERSION" >/dev/null
}

ensure_host_tools() {
  local missing=() p
  for p in "${HOST_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# What the image is built from; the same digest means there is nothing to do.
inputs_digest() {
  {
    sha256sum "$SELF" "$ROOT/image/requirements.lock" "$ROOT/image/build-requirements.lock"
    (cd "$ROOT" && git ls-files -z -- pyproject.toml README.md LICENSE virtrigaud | xargs -0 sha256sum)
    echo "$SOURCE_DATE_EPOCH $REVISION $BUILD_PKGS $RUNTIME_PKGS"
  } | sha256sum | cut -c1-32
}

source_facts() {
  cd "$ROOT"
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
  REVISION=$(git rev-parse HEAD)
  git diff --quiet HEAD -- pyproject.toml README.md LICENSE virtrigaud image || REVISION+="-dirty"
  VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
  export SOURCE_DATE_EPOCH REVISION VERSION
}

main() {
  [ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root and chroot); CI runs as root"
  source_facts
  local archive="$OUT/virtrigaud-$VERSION.oci.tar" inputs
  inputs=$(inputs_digest)
  if [ -f "$archive" ] && [ -f "$OUT/image.json" ] && grep -q "\"inputs\": \"$inputs\"" "$OUT/image.json"; then
    log "up to date: $archive"
    return 0
  fi
  ensure_host_tools
  mkdir -p "$OUT"
  exec 9>"$OUT/.lock"
  flock 9
  local start=$SECONDS
  WORK=$OUT/work
  rm -rf "$WORK"
  mkdir -p "$WORK"
  DEPS_TAR=$CACHE/deps-$( {
    cat image/requirements.lock image/build-requirements.lock
    declare -f hook_deps build_deps in_chroot
    echo "$BUILD_PKGS $SUITE"
  } | sha256sum | cut -c1-24).tar
  export WORK DEPS_TAR
  local deps_seconds=cached t
  if [ ! -f "$DEPS_TAR" ]; then
    t=$SECONDS
    build_deps
    deps_seconds=$((SECONDS - t))
    # One venv per lock is kept; older ones are of no use.
    find "$CACHE" -maxdepth 1 -name 'deps-*.tar' ! -path "$DEPS_TAR" -delete
  fi
  t=$SECONDS
  build_runtime
  local runtime_seconds=$((SECONDS - t))
  t=$SECONDS
  write_image
  local image_seconds=$((SECONDS - t)) seconds=$((SECONDS - start))
  mv "$WORK/image.oci.tar" "$archive"
  mv "$WORK/dpkg-l.txt" "$WORK/python-packages.txt" "$OUT/"
  python3 "$ROOT/image/describe.py" --archive "$archive" --rootfs-tar "$WORK/rootfs.tar" \
    --tag "$VERSION" --inputs "$inputs" --build-seconds "$seconds" \
    --stage-seconds "deps=$deps_seconds,runtime=$runtime_seconds,image=$image_seconds" \
    --revision "$REVISION" \
    --source-date-epoch "$SOURCE_DATE_EPOCH" >"$OUT/image.json"
  rm -rf "$WORK"
  if ! diff -q "$ROOT/image/dpkg-l.txt" "$OUT/dpkg-l.txt" >/dev/null 2>&1; then
    log "the Debian packages differ from the recorded image/dpkg-l.txt (a Debian update?):"
    diff "$ROOT/image/dpkg-l.txt" "$OUT/dpkg-l.txt" | grep '^[<>] ii' | head -20 >&2 || true
    log "review and copy $OUT/dpkg-l.txt to image/dpkg-l.txt"
  fi
  log "built $archive in ${seconds}s"
  cat "$OUT/image.json"
}

case "${1:-}" in
  hook-deps) hook_deps "$2" ;;
  hook-runtime) hook_runtime "$2" ;;
  # The digest image.json records; tests compare it to know the image is this tree's.
  inputs) source_facts && inputs_digest ;;
  "") main ;;
  *) die "usage: image/build.sh [inputs]" ;;
esac
