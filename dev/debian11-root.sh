#!/usr/bin/env bash
# A Debian 11 (bullseye, glibc 2.31) root for tests on a real older system (issue 19), with a CPython compiled
# inside it (so built against glibc 2.31) at /opt/python3.9: an environment built here from that interpreter
# (--python <root>/opt/python3.9/bin/python3.9 --target manylinux_2_31_x86_64) runs in the root; one built from
# this machine's interpreter (GLIBC_2.35) must be refused by the run shim before it unpacks anything.
#   bash dev/debian11-root.sh        # prints the root's path on stdout (builds it once, then reuses it)
# Exit codes: 0 ready; 75 the Debian registry cannot be reached (tests skip, loudly); other: a real failure.
#
# Why these choices:
# - debootstrap --variant=minbase plus a C compiler: the smallest root that has a dynamic loader, a libc,
#   coreutils, a POSIX sh and tar/gzip (what the shim needs) and can compile CPython. CI builds it once per run
#   (the whole suite must stay under 15 min). Measured on 2 shared, busy cores (load 6-10): 3.3-4.9 min in all,
#   debootstrap 46-84 s, CPython 1.7 min of CPU (user+sys); the root takes ~370 MB.
# - Why not Debian's own python3.9 package: it says Py_ENABLE_SHARED with its libpython in /usr/lib (a separate
#   package) and its site.py puts only dist-packages directories on sys.path, never the site-packages the
#   installers write to, so a copy of it cannot become a portable environment. CPython is compiled instead from
#   the source of Debian's package (the upstream tarball python3.9_3.9.2.orig.tar.xz from Debian's pool, checked
#   against the sha256 in bullseye's Sources index), without Debian's patches, configured plainly (static
#   libpython, no ensurepip); only zlib and libffi headers are added (no ssl: the installers run on the host).
#   Made quick to build, not fast to run (it only serves tests): -O1 without -g, and `make install` without its
#   three compileall passes over the stdlib (the portable engine compiles its own copy's bytecode anyway).
# - Cached in ~/.cache/poncho_wq-dev (XDG_CACHE_HOME honoured), built in a temporary sibling directory and renamed into
#   place under a lock: a killed build leaves no half root that a later run would use, and two concurrent runs
#   build it once. A stamp file inside records how it was made; a root without it is built again.
# - The mirror is the one apt on this machine uses (deb.debian.org); DEBIAN11_MIRROR overrides it for the script
#   only (a dev script's knob, not a poncho_wq setting).
set -euo pipefail
PATH=$PATH:/usr/sbin:/sbin  # debootstrap and chroot live there; some root shells (sudo, CI) leave them out

mirror=${DEBIAN11_MIRROR:-http://deb.debian.org/debian}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/poncho_wq-dev  # not the build cache: clearing that must not cost this
root=$cache/debian11-root
stamp_text="debian11-root v4 minbase bullseye cpython-3.9.2 $mirror"
src_name=python3.9_3.9.2.orig.tar.xz
src_sha256=3c2034c54f811448f516668dce09d24008a0716c3a794dd8639b5388cbde247d

if [ "$(cat "$root/.poncho-root-stamp" 2>/dev/null)" = "$stamp_text" ]; then
  echo "$root"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "dev/debian11-root.sh: debootstrap and chroot need root" >&2
  exit 1
fi

# fetch URL FILE SECONDS: curl, else wget, else python3 (a fresh Debian machine may have neither of the first two).
fetch() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS -m "$3" -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -T "$3" -O "$2" "$1"
  else
    python3 -c 'import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[3])) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)' "$1" "$2" "$3"
  fi
}
if ! fetch "$mirror/dists/bullseye/Release" /dev/null 30; then
  echo "dev/debian11-root.sh: the Debian registry $mirror cannot be reached (bullseye Release);" \
    "set DEBIAN11_MIRROR to a reachable mirror" >&2
  exit 75
fi
# After the registry check: without a network apt-get fails too, and that must be the loud skip (75), not a failure.
if ! command -v debootstrap >/dev/null 2>&1; then
  echo "dev/debian11-root.sh: installing debootstrap (apt)" >&2
  apt-get update -qq >&2 || :
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi

mkdir -p "$cache"
exec 9>"$cache/.debian11-root.lock"
flock 9
# Another run may have finished while we waited for the lock.
if [ "$(cat "$root/.poncho-root-stamp" 2>/dev/null)" = "$stamp_text" ]; then
  echo "$root"
  exit 0
fi
# mounts_below DIR: the mount points at or below DIR (deepest first), one per line, from /proc/self/mountinfo
# (whose mount points escape space, tab, newline and backslash as \ooo).
mounts_below() {
  local esc
  esc=$(realpath -m -- "$1" | sed 's/\\/\\134/g; s/ /\\040/g; s/\t/\\011/g')
  awk -v d="$esc" '$5 == d || index($5, d "/") == 1 { print length($5), $5 }' /proc/self/mountinfo |
    sort -rn | cut -d' ' -f2- | while IFS= read -r m; do printf '%b\n' "$(printf '%s' "$m" | sed 's/\\\([0-7][0-7][0-7]\)/\\0\1/g')"; done
}
# remove_tree DIR: unmount what is mounted below DIR, then remove it. Why not rm alone: debootstrap mounts proc and
# sys in its target (and may bind device files), and a killed run leaves them mounted; `rm --one-file-system` skips
# other file systems but goes *through* a bind mount of the same one (deleting the files of the mounted source, e.g.
# the host's), so a directory that still has a mount below it is left alone, loudly.
remove_tree() {
  local m
  mounts_below "$1" | while IFS= read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || :; done
  if [ -n "$(mounts_below "$1")" ]; then
    echo "dev/debian11-root.sh: $1 still has mounts below it (findmnt -R '$1'); not removing it: umount them" >&2
    return 1
  fi
  rm -rf --one-file-system "$1"
}
# We hold the lock: leftovers are from killed runs.
for old in "$cache"/.tmp-debian11-root.* "$root".old.*; do
  [ -e "$old" ] || continue
  echo "dev/debian11-root.sh: removing leftover $old" >&2
  remove_tree "$old"
done
tmp=$(mktemp -d "$cache/.tmp-debian11-root.XXXXXX")
trap 'remove_tree "$tmp"' EXIT
start=$(date +%s)
echo "dev/debian11-root.sh: debootstrap bullseye from $mirror into $tmp (about a minute)" >&2
if ! debootstrap --variant=minbase --include=gcc,make,libc6-dev,zlib1g-dev,libffi-dev,xz-utils \
    bullseye "$tmp" "$mirror" >"$tmp.log" 2>&1; then
  tail -n 30 "$tmp.log" >&2
  cat "$tmp/debootstrap/debootstrap.log" 2>/dev/null | tail -n 30 >&2 || :
  rm -f "$tmp.log"
  echo "dev/debian11-root.sh: debootstrap failed (log above)" >&2
  exit 1
fi
rm -f "$tmp.log"
# Downloaded .debs and apt lists: 30 MB nobody needs.
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
echo "dev/debian11-root.sh: $(( $(date +%s) - start )) s; compiling CPython 3.9.2 inside the root (a few minutes)" >&2
fetch "$mirror/pool/main/p/python3.9/$src_name" "$tmp/$src_name" 300
echo "$src_sha256  $tmp/$src_name" | sha256sum -c --quiet >&2
mkdir -p "$tmp/usr/src/cpython"
tar -xJf "$tmp/$src_name" -C "$tmp/usr/src/cpython" --strip-components=1
rm -f "$tmp/$src_name"
jobs=$(nproc 2>/dev/null || echo 2)
build="cd /usr/src/cpython && ./configure --prefix=/opt/python3.9 --without-ensurepip OPT='-DNDEBUG -fwrapv -O1' &&
  sed -i 's|\$(DESTDIR)\$(LIBDEST)/compileall.py|-c pass|' Makefile && make -j$jobs && make install"
# In a private mount namespace with its own /proc and a /dev/shm: configure runs a sem_open test, which fails
# without /dev/shm and then leaves multiprocessing's locks out of the interpreter (the portable engine's bytecode
# step needs them). The mounts vanish with the namespace: nothing stays mounted in the root.
mkdir -p "$tmp/dev/shm"
if ! unshare --mount --fork --pid --mount-proc="$tmp/proc" /bin/sh -c \
    'mount -t tmpfs -o mode=1777 tmpfs "$1/dev/shm" &&
     exec chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh -c "$2"' sh "$tmp" "$build" \
    >"$tmp.log" 2>&1; then
  tail -n 40 "$tmp.log" >&2
  rm -f "$tmp.log"
  echo "dev/debian11-root.sh: compiling CPython inside the root failed (log above)" >&2
  exit 1
fi
rm -f "$tmp.log"
rm -rf "$tmp/usr/src/cpython"
chroot "$tmp" /opt/python3.9/bin/python3.9 -c 'import zlib, ctypes, json; from _multiprocessing import SemLock' >&2 || {
  echo "dev/debian11-root.sh: the root's /opt/python3.9 does not start" >&2; exit 1; }
echo "$stamp_text" >"$tmp/.poncho-root-stamp"
if [ -e "$root" ]; then
  mv "$root" "$root.old.$$"
  remove_tree "$root.old.$$"
fi
mv "$tmp" "$root"
trap - EXIT
echo "dev/debian11-root.sh: ready in $(( $(date +%s) - start )) s: $root" >&2
echo "$root"
