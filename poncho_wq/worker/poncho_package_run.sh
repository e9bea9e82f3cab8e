#!/bin/sh
# poncho_package_run (also installed as python_package_run): run a command inside a conda-pack environment.
#
#   poncho_package_run [-w SECS] [-d DIR] -e ENV.tar.gz [--code CODE.tar.gz] [--] command [args ...]
#   poncho_package_run -e UNPACKED_DIR [--] command [args ...]
#   poncho_package_run --fetch URL --sha256 HEX --size N [--fetch-timeout S] -e env-<hex>.tar.gz [--] command ...
#   poncho_package_run --extract-to NEWDIR -e ENV.tar.gz           # only extract (TaskVine's unpack mini task)
#   poncho_package_run --extract-to NEWDIR -e env-<hex> --part PART.tar.gz ...   # the same, from parts
#
# Needs only sh, tar, gzip, find and coreutils on the worker (no poncho_wq; the environment's own bin/python to
# relocate it); tested under dash, bash --posix and busybox sh.  Exit status: 1 bad usage, 2 environment missing,
# 3 extraction failed, 4 below the environment's floor, relocation/activation failed, lock timeout or an
# untrusted directory; otherwise the command's.  The design (cache root, trust, unpack-once locking, several
# hosts, --unpack-to, relocation, activation, layers, settings): docs/worker.md in poncho_wq's source.

@SHARED@

_pr_die() { _c=$1; shift; printf 'poncho_package_run: %s\n' "$*" >&2; exit "$_c"; }

_pr_usage() {
    cat <<'USAGE'
Usage: poncho_package_run [options] -e <file> [--] command and args ...
  -e, --environment <path>   Conda environment: a tarball (conda-pack) or an unpacked directory. (Required.)
  -d, -u, --unpack-to <dir>  Unpack into <dir> (created if missing; used as is if not empty). Default: one
                             directory per environment per worker, shared by all tasks (see PONCHO_ENV_DIR).
      --fetch <url>          Fetch the tarball named by -e (env-<hex>.tar.gz, absent here) from <url> when the
                             per-worker cache does not hold it ready (one fetch per worker, under the lock),
                             with --sha256 <hex> and --size <bytes> (checked before it is unpacked) and
                             --fetch-timeout <secs> (default 300).  Exit 2 an HTTP error, 3 a failed transfer or
                             other bytes, 4 no curl/wget or sha256 tool.
      --part <file>          A part of the environment (part-<hash>.tar.gz, repeated, own part first): -e then
                             names it (env-<hash>), and it is assembled from its parts once per worker.
      --extract-to <newdir>  Only extract the tarball -e names into <newdir> (which must not exist), with the
                             same checks, and exit 0: no cache, no lock, no relocation, no command (TaskVine's
                             unpack mini task: bin/run_in_env relocates where the directory ends up).  With
                             --part, -e names env-<hex>: parts unpacked once per worker, <newdir> linked.
      --code <file>          A code layer (code-<hash>.tar.gz) stacked on the environment: unpacked once per
                             worker, its lib/ first on PYTHONPATH and its bin/ first on PATH.
  -w, --wait-for-lock <secs> Seconds to wait for another task unpacking the same environment (at most 9
                             digits). Default 300. With --fetch, the fetch timeout is added (a waiter
                             outlasts the holder's fetch).
      --debug                Print the timing of each phase on stderr (same as PONCHO_DEBUG=1).
  -h, --help                 Show this help.
  command and args           Command run (exec'd, as argv) inside the environment; its exit status is returned.
Exit status: 1 bad usage, 2 environment missing, 3 extraction failed, 4 a worker below the environment's
floor (architecture, glibc), relocation/activation failed, lock timeout or an untrusted directory; otherwise the
command's.  Environment: PONCHO_ENV_DIR, PONCHO_DEBUG, PONCHO_LOCK=mkdir, PONCHO_ENV_KEEP,
PONCHO_ENV_BUDGET_MB, PONCHO_SKIP_FLOOR_CHECK=1.
USAGE
}

# Phase timings (PONCHO_DEBUG=1 only: date forks).  _pr_t is checked because activation may have clobbered it.
_pr_t=
_pr_mark() {
    [ "${PONCHO_DEBUG:-}" = 1 ] || return 0
    _n=$(date +%s%N)
    case $_pr_t in '' | *[!0-9]*) ;; *) printf 'poncho_package_run: %s: %s ms\n' "$1" $(( (_n - _pr_t) / 1000000 )) >&2 ;; esac
    _pr_t=$_n
}

# $1 = env dir; the code layer's dir (or nothing) travels as a positional parameter because the activation
# files run in this shell and may clobber any variable of ours (see poncho_activate).
_pr_exec() {
    _pr_e=$1
    shift
    # The use locks' second descriptors (see _pr_evict); nothing to do where a lock is not open.
    if [ -n "$_pr_managed" ]; then
        { command exec 7>&9; } 2>/dev/null || :
        { command exec 6>&8; } 2>/dev/null || :
    fi
    set -- "$_pr_e" "$_pr_cd" "$@"
    poncho_activate "$1"
    if [ -n "$2" ]; then
        PYTHONPATH=$2/lib${PYTHONPATH:+:$PYTHONPATH}
        PATH=$2/bin:$PATH
        export PYTHONPATH PATH
    fi
    shift 2
    _pr_mark activate
    [ "$#" -gt 0 ] || exit 0
    # Our own message for a name not on PATH; a path is left to exec (126 not executable, 127 missing).
    case $1 in */*) ;; *) command -v -- "$1" >/dev/null 2>&1 || _pr_die 127 "command not found: $1" ;; esac
    exec "$@"
}

_pr_uid=
_pr_getuid() { [ -n "$_pr_uid" ] || _pr_uid=$(id -u); }

# Cold path: refuse directory $1 (it exists) when another user could swap it, or a directory above it, for a
# tree of theirs (see "Shared parents" above).  $2 names it in the message, $3 says what to do instead;
# $4 = "private": $1 itself must not be writable by others at all (an --unpack-to DIR).  Every prefix of the
# path as given (links not followed: a link is looked at where it is) and of its physical path, in one stat.
_pr_safedir() {
    _pr_getuid
    _pr_sdl=$1
    _pr_sdw=$2
    _pr_sdf=$3
    _pr_sdo=${4:-}
    _pr_here=$PWD
    cd -P -- "$1" 2>/dev/null || _pr_die 4 "cannot enter $1 ($2)"
    _pr_sdp=$PWD
    cd -- "$_pr_here" || _pr_die 4 "cannot return to $_pr_here"
    set --
    for _pr_sdx in "$_pr_sdl" "$_pr_sdp"; do
        # Each chain starts at "/", which is how the loop below knows a chain begins.
        set -- "$@" /
        _pr_sdr=${_pr_sdx#/}
        _pr_sdc=
        while [ -n "$_pr_sdr" ]; do
            _pr_sdc=$_pr_sdc/${_pr_sdr%%/*}
            case $_pr_sdr in */*) _pr_sdr=${_pr_sdr#*/} ;; *) _pr_sdr= ;; esac
            set -- "$@" "$_pr_sdc"
        done
    done
    _pr_sds=$(stat -c '%u %a %F' -- "$@" 2>/dev/null) || _pr_die 4 "cannot check the directories above $_pr_sdl ($_pr_sdw)"
    _pr_sdpw=
    while read -r _pr_sdu _pr_sda _pr_sdt _pr_sdz; do
        _pr_sdn=$1
        shift
        [ "$_pr_sdn" != / ] || _pr_sdpw=
        # In a directory every user can write to (a sticky one, or we stopped below), anyone can make any name
        # first: a name there is trusted only when it is root's or ours.
        if [ -n "$_pr_sdpw" ] && [ "$_pr_sdu" != 0 ] && [ "$_pr_sdu" != "$_pr_uid" ]; then
            _pr_die 4 "$_pr_sdn (on the way to $_pr_sdw) belongs to user $_pr_sdu and lies in $_pr_sdpw, where every user can create names: not trusted ($_pr_sdf)"
        fi
        _pr_sdpw=
        [ "$_pr_sdt" = directory ] || continue
        case $_pr_sda in
            *[2367]) ;;
            *) continue ;;
        esac
        case $_pr_sda in
            [1357]???) ;;
            *) _pr_die 4 "$_pr_sdn is writable by every user and has no sticky bit: another user could replace $_pr_sdw (or a directory on its way) by a tree of theirs at any moment; $_pr_sdf, or make it sticky (chmod +t $_pr_sdn)" ;;
        esac
        [ "$#" -gt 0 ] || [ "$_pr_sdo" != private ] ||
            _pr_die 4 "$_pr_sdw is writable by every user: another user could put files in it; $_pr_sdf"
        _pr_sdpw=$_pr_sdn
    done <<EOF
$_pr_sds
EOF
}

# This host's name for the owners of locks and temp dirs (see "Several hosts" above).  Forks: cold path only.
_pr_host=
_pr_gethost() {
    [ -z "$_pr_host" ] || return 0
    _pr_host=$(uname -n 2>/dev/null) || _pr_host=
    [ -n "$_pr_host" ] || _pr_host=$(hostname 2>/dev/null) || _pr_host=
    case $_pr_host in
        '') _pr_host=unknown ;;
        *[!A-Za-z0-9.-]*) _pr_host=$(printf '%s' "$_pr_host" | cksum); _pr_host=h${_pr_host%% *} ;;
    esac
}

# Status 0 when owner $1 ("<host>:<pid>", or an old-format "<pid>") is of this host.
_pr_islocal() {
    case $1 in *:*) [ "${1%:*}" = "$_pr_host" ] ;; esac
}

# Status 0 when owner $1 is of this host and its pid is gone (a pid that is not a number, from a damaged file,
# counts as gone, as it always did).
_pr_local_dead() {
    _pr_islocal "$1" || return 1
    case ${1##*:} in '' | *[!0-9]*) return 0 ;; esac
    ! kill -0 "${1##*:}" 2>/dev/null
}

# The owner of temp dir $1 (.<id>.tmp.[evict|old]<pid>[@<host>][~<mktemp's random part>]) as "<host>:<pid>", or
# "<pid>" for an old name, in _pr_tow.  An id never holds "@" or "~" (other names are replaced by their cksum),
# nor does a host.
_pr_tmpowner() {
    _pr_tow=${1##*/}
    _pr_tow=${_pr_tow%"~"*}
    _pr_toh=
    case $_pr_tow in *@*) _pr_toh=${_pr_tow##*@}: ; _pr_tow=${_pr_tow%@*} ;; esac
    _pr_tow=${_pr_tow##*.tmp.}
    _pr_tow=${_pr_tow#evict}
    _pr_tow=$_pr_toh${_pr_tow#old}
}

# Seconds since file $1 was modified, in _pr_agev (status 1: unknown).
_pr_age() {
    _pr_am=$(stat -c %Y -- "$1" 2>/dev/null) && _pr_an=$(date +%s) || return 1
    case $_pr_am$_pr_an in '' | *[!0-9]*) return 1 ;; esac
    _pr_agev=$((_pr_an - _pr_am))
}

# --- locks: $1 = file to flock (or directory, opened read-only), $2 = mkdir lock path -------------------
# Status 1: the wait timed out; 2: no lock can be made there (read-only file system, no write permission).
# `command exec`: a failed redirection on the special builtin exec ends a POSIX shell on the spot (dash exits
# 2, which reads as "environment missing", with no message of ours); through `command` it is an ordinary
# failure.  The group's 2>/dev/null keeps the shell's own message out of the task's stderr (ours names the dir).
_pr_lockmode=
_pr_lockowner=
_pr_brokeowner=

# The locking mode of directory $1 (a root, or an --unpack-to DIR), in _pr_lmode.  A flock and a mkdir lock do not
# exclude each other: a task with PONCHO_LOCK=mkdir and one with flock on the same root both went ahead, the flock
# one took the other's live temp dir for a dead one and deleted it under its running tar, which went on and
# published a tree with files missing.  So the first task that locks in a directory records its mode there, as
# the text of the symbolic link $1/.poncho_lockmode (made whole or not at all, so two first tasks agree on one),
# and every later task uses that mode: one without PONCHO_LOCK follows a recorded mkdir; one that asks for mkdir
# where flock is recorded, or that has no flock(1) there, is refused (exit 4) rather than locking differently.
# Where nothing can be recorded (a read-only root), this task's mode; its lock then fails with exit 3 anyway.
# Forks: cold path only.
_pr_lrdir=
_pr_lockrec() {
    # Once per directory and run (a record, once made, stays: it is removed only while no task runs there).
    [ "$_pr_lrdir" != "$1" ] || return 0
    _pr_lmode=flock
    if [ "${PONCHO_LOCK:-}" = mkdir ] || ! command -v flock >/dev/null 2>&1; then _pr_lmode=mkdir; fi
    if ! _pr_lr=$(readlink -- "$1/.poncho_lockmode" 2>/dev/null); then
        if [ ! -e "$1/.poncho_lockmode" ] && [ ! -L "$1/.poncho_lockmode" ]; then
            ln -s -- "$_pr_lmode" "$1/.poncho_lockmode" 2>/dev/null || :
        fi
        # Read back, whoever made it (and a directory planted there, which ln would have put the link into, is
        # no record).
        _pr_lr=$(readlink -- "$1/.poncho_lockmode" 2>/dev/null) || _pr_lr=
        if [ -z "$_pr_lr" ] && { [ -e "$1/.poncho_lockmode" ] || [ -L "$1/.poncho_lockmode" ]; }; then
            _pr_die 4 "$1/.poncho_lockmode is not a lock mode record of this shim: remove it while no task runs there"
        fi
    fi
    case $_pr_lr in
        '' | "$_pr_lmode") ;;
        mkdir) _pr_lmode=mkdir ;;
        flock)
            [ "${PONCHO_LOCK:-}" != mkdir ] ||
                _pr_die 4 "PONCHO_LOCK=mkdir, but $1 is locked with flock (recorded in $1/.poncho_lockmode by the first task that locked there): tasks locking differently would not exclude each other; give every task using it the same PONCHO_LOCK, or remove $1/.poncho_lockmode while no task runs there"
            _pr_die 4 "$1 is locked with flock (recorded in $1/.poncho_lockmode by the first task that locked there), and this host has no flock(1): install util-linux, or use another directory" ;;
        *) _pr_die 4 "$1/.poncho_lockmode is not a lock mode record of this shim: remove it while no task runs there" ;;
    esac
    _pr_lrdir=$1
}

# Open file $2 of the root on fd $1 (a digit), appending (read-only where it cannot be written: a shared flock, or
# a read-only root), never through a link or into a file that is not a regular one (see "Shared roots"):
# created only with noclobber (O_CREAT|O_EXCL, which fails on any existing name, a dangling link included),
# else opened only when it is a regular file (and ours, in a root whose entries must be ours), and checked again
# after opening: still that file, through /dev/fd where there is one.  Status 2: it cannot be opened (read-only
# file system, no write permission); 3: not trusted (a link, another type, another owner).  All builtins.
_pr_openlock() {
    if [ ! -e "$2" ] && [ ! -L "$2" ]; then
        set -C
        { eval "command exec $1>\"\$2\""; } 2>/dev/null
        _pr_ol=$?
        set +C
        if [ "$_pr_ol" = 0 ]; then _pr_fdcheck "$1" "$2"; return; fi
        [ -e "$2" ] || [ -L "$2" ] || return 2
    fi
    [ -f "$2" ] && [ ! -L "$2" ] && { [ -z "$_pr_mine" ] || [ -O "$2" ]; } || return 3
    { eval "command exec $1>>\"\$2\""; } 2>/dev/null || { eval "command exec $1<\"\$2\""; } 2>/dev/null || return 2
    _pr_fdcheck "$1" "$2"
}

# After opening $2 on fd $1: the path still names that very file, a regular one (see _pr_openlock).
_pr_fdcheck() {
    if [ -f "$2" ] && [ ! -L "$2" ] && { [ -z "$_pr_mine" ] || [ -O "$2" ]; } &&
        { [ ! -e "/dev/fd/$1" ] || [ "$2" -ef "/dev/fd/$1" ]; }; then
        return 0
    fi
    eval "exec $1>&-"
    return 3
}

_pr_lock() {
    _pr_lockrec "$3"
    if [ "$_pr_lmode" = flock ]; then
        while :; do
            if [ -d "$1" ]; then
                { command exec 9<"$1"; } 2>/dev/null || return 2
            else
                _pr_openlock 9 "$1" || return
            fi
            flock -w "$_pr_wait" 9 || { exec 9>&-; return 1; }
            # A lock file an eviction removed while we waited (see _pr_evict1) is no lock any more: take the
            # one now at its path.
            [ -d "$1" ] || [ ! -e /dev/fd/9 ] || [ "$1" -ef /dev/fd/9 ] && break
            exec 9>&-
        done
        _pr_lockmode=flock
        return 0
    fi
    _pr_gethost
    _pr_lockdir=$2
    _pr_lockowner=
    _pr_noage=${4:-}
    # A lock of another host is broken at this age (see "Several hosts" above).
    _pr_stale=$((_pr_wait * 2))
    [ "$_pr_stale" -ge 60 ] || _pr_stale=60
    _i=0
    _empty=0
    _nodir=0
    until mkdir "$_pr_lockdir" 2>/dev/null; do
        if [ ! -d "$_pr_lockdir" ]; then
            # mkdir failed and there is no lock: its holder may have released it just now (try again), but
            # three times in a row means it cannot be made (read-only, not writable), not a busy lock.
            _nodir=$((_nodir + 1))
            [ "$_nodir" -lt 3 ] || return 2
            continue
        fi
        _nodir=0
        _o=
        # The group's 2>/dev/null is in place before the < is tried: a pid file not written yet, or removed
        # with its lock just now, must not print "cannot open .../pid" into the task's stderr.
        { IFS= read -r _o <"$_pr_lockdir/pid"; } 2>/dev/null || :
        _pr_lockowner=
        if [ -n "$_o" ] && _pr_local_dead "$_o"; then
            # The owner died: break its lock.  Renaming first means only one of several waiters deletes it.
            mv -- "$_pr_lockdir" "$_pr_lockdir.stale.$$@$_pr_host" 2>/dev/null && rm -rf -- "$_pr_lockdir.stale.$$@$_pr_host"
            continue
        fi
        if [ -n "$_o" ] && ! _pr_islocal "$_o"; then
            # Another host's: alive as far as we can tell, until its lock is too old (checked once a second;
            # never in an --unpack-to DIR, which is unpacked in place: see there).
            _pr_lockowner=$_o
            if [ -z "$_pr_noage" ] && [ $((_i % 10)) -eq 0 ] && _pr_age "$_pr_lockdir/pid" &&
                [ "$_pr_agev" -gt "$_pr_stale" ] && mv -- "$_pr_lockdir" "$_pr_lockdir.stale.$$@$_pr_host" 2>/dev/null; then
                rm -rf -- "$_pr_lockdir.stale.$$@$_pr_host"
                printf 'poncho_package_run: warning: %s\n' "broke the lock $_pr_lockdir of pid ${_o##*:} on host ${_o%:*}: it is $_pr_agev s old, more than $_pr_stale s (twice the lock wait, at least 60 s), so that host is taken to be down; its temp dirs of this id are removed" >&2
                _pr_brokeowner=$_o
                _pr_lockowner=
                continue
            fi
        fi
        if [ -z "$_o" ]; then
            # Owner between mkdir and writing its pid, or killed right there: give it 5 s, and a lock dir made
            # a minute ago at least (asked once a second after that): another host's NFS client may not see the
            # pid file its owner wrote for as long as it caches the directory (acdirmax, 60 s by default).
            _empty=$((_empty + 1))
            if [ "$_empty" -gt 50 ] && [ $((_empty % 10)) -eq 1 ] &&
                { ! _pr_age "$_pr_lockdir" || [ "$_pr_agev" -gt 60 ]; }; then
                mv -- "$_pr_lockdir" "$_pr_lockdir.stale.$$@$_pr_host" 2>/dev/null && rm -rf -- "$_pr_lockdir.stale.$$@$_pr_host"
                _empty=0
                continue
            fi
        else
            _empty=0
        fi
        _i=$((_i + 1))
        [ "$_i" -le $((_pr_wait * 10)) ] || return 1
        sleep 0.1 2>/dev/null || sleep 1
    done
    printf '%s\n' "$_pr_host:$$" >"$_pr_lockdir/pid"
    _pr_lockmode=mkdir
}

_pr_unlock() {
    case $_pr_lockmode in
        flock) exec 9>&- ;;
        mkdir)
            # Only while it is still ours: a lock broken for its age (see "Several hosts") may be another's now.
            _o=
            { IFS= read -r _o <"$_pr_lockdir/pid"; } 2>/dev/null || :
            [ "$_o" != "$_pr_host:$$" ] || rm -rf -- "$_pr_lockdir" ;;
    esac
    _pr_lockmode=
}

# $1 = status of _pr_lock, $2 = the directory, $3 = what to do when it cannot be written.
_pr_lockfail() {
    [ "$1" = 2 ] && _pr_die 3 "cannot create a lock in $2: read-only file system or no write permission ($3)"
    [ "$1" = 3 ] && _pr_die 4 "the lock file of $2 is a symbolic link, not a regular file, or another user's: not trusted (remove it, or $3)"
    [ -z "$_pr_lockowner" ] || [ -z "$_pr_noage" ] ||
        _pr_die 4 "timed out after $_pr_wait s waiting for the lock in $2, held by pid ${_pr_lockowner##*:} on host ${_pr_lockowner%:*} (another host sharing this directory, unpacking?  If that host is down, remove $_pr_lockdir)"
    [ -z "$_pr_lockowner" ] ||
        _pr_die 4 "timed out after $_pr_wait s waiting for the lock in $2, held by pid ${_pr_lockowner##*:} on host ${_pr_lockowner%:*} (another host sharing this directory, unpacking?  Its lock is broken once it is $_pr_stale s old: twice the lock wait, at least 60 s)"
    _pr_die 4 "timed out after $_pr_wait s waiting for the lock in $2 (another task unpacking?)"
}

# --- extraction -----------------------------------------------------------------------------------------
# $1 tarball (absolute), $2 a new staging dir (0700, made by the caller); the tree goes to $2/env.  On failure
# _pr_why says why.
#
# $2 is 0700 and the archive lands one level down: an archive's "./" entry sets the mode of the directory
# it is extracted into, so only the parent stays closed to other users until the checks below have run.
# Owners and modes are not taken from the archive: as root, plain `tar -x` gives files to the archive's uids
# (a tarball built by user 1002 leaves files that user can rewrite and root later runs), keeps setuid bits and
# creates device nodes.  GNU tar and bsdtar get --no-same-owner --no-same-permissions and detect compression
# themselves; others (busybox) get -o --no-same-permissions and the decompressor named by the file's suffix
# (busybox tar does not detect it).  Which tar it is is asked here, on the cold path only.
# Then find(1) over the tree: a device node, FIFO or socket (conda packages never ship one) refuses the whole
# archive; setuid/setgid bits are stripped, as GNU tar already does with --no-same-permissions (busybox tar
# keeps them: measured with 1.35), so the result does not depend on which tar the worker has.
# tar's stderr is cut to its last 5 lines (a full disk gives one line per file, 605 in one measured case) and
# kept in memory, not in a file: the full disk is exactly when that file could not be written.
_pr_nl='
'
_pr_tarkind=
# Which tar, in _pr_tarkind: asked once per run (an environment from parts unpacks several archives).
_pr_tarprobe() {
    [ -z "$_pr_tarkind" ] || return 0
    case $(tar --version 2>/dev/null) in
        *'GNU tar'*) _pr_tarkind=gnu ;;
        *bsdtar*) _pr_tarkind=bsd ;;
        *) _pr_tarkind=other ;;
    esac
}
_pr_unpack() {
    _pr_why=
    mkdir -- "$2/env" 2>/dev/null || { _pr_why="cannot create $2/env (read-only file system or no write permission?)"; return 1; }
    _pr_tarprobe
    case $_pr_tarkind in
        gnu)
            _pr_tarflags='--no-same-owner --no-same-permissions'
            # pigz, when the worker has it, decompresses beside tar in threads of its own: 0.79x the wall time of
            # tar -xzf on a 127 MB environment (bench/cold_start.py --codecs).  Only for a file that starts with
            # gzip's magic bytes (GNU tar would detect any other compression itself; pigz -d would fail on it).
            if command -v pigz >/dev/null 2>&1; then
                case $(od -An -tx1 -N2 -- "$1" 2>/dev/null) in
                    *1f*8b*) _pr_tarflags="$_pr_tarflags --use-compress-program=pigz" ;;
                esac
            fi ;;
        bsd) _pr_tarflags='--no-same-owner --no-same-permissions' ;;
        *)  case $1 in
                *.tar) _pr_tarflags='-o --no-same-permissions' ;;
                *.tar.bz2 | *.tbz2 | *.tbz) _pr_tarflags='-j -o --no-same-permissions' ;;
                *.tar.xz | *.txz) _pr_tarflags='-J -o --no-same-permissions' ;;
                *) _pr_tarflags='-z -o --no-same-permissions' ;;
            esac ;;
    esac
    # The status is the last line through the pipe, so tail bounds what is kept and the status survives.
    # shellcheck disable=SC2086 # the flags are single words
    _pr_err=$({ tar -x $_pr_tarflags -f "$1" -C "$2/env" 2>&1 >/dev/null; echo "tar-status=$?"; } | tail -n 6)
    case $_pr_err in
        *tar-status=0) ;;
        *)  _pr_say "${_pr_err%tar-status=*}"
            _pr_why="tar failed (disk full? corrupt?)"
            return 1 ;;
    esac
    # busybox tar drops the leading "../" of a member name, says so once and succeeds, where GNU tar refuses the
    # member (exit 3 here): the same archive is refused whatever the worker's tar.
    case $_pr_err in
        *"leading '"*"../' from member names"*)
            _pr_say "${_pr_err%tar-status=*}"
            _pr_why="it has member names with '..' (GNU tar refuses them, busybox tar cuts them short): the archive is refused"
            return 1 ;;
    esac
    # Directories without owner read, write or search permission (an archive's mode 000 or 0555 directory, set by
    # GNU tar once its files are in) get them: otherwise this user could neither use nor delete the tree
    # (find runs the chmod before it descends).
    _pr_bad=$(find "$2/env" \( -type b -o -type c -o -type p -o -type s \) -print \
        -o -type f \( -perm -4000 -o -perm -2000 \) ! -exec chmod ug-s {} \; -print \
        -o -type d ! -perm -700 ! -exec chmod u+rwx {} \; -print) ||
        { _pr_why="could not check the extracted files with find(1)"; return 1; }
    if [ -n "$_pr_bad" ]; then
        _pr_bad=${_pr_bad%%"$_pr_nl"*}
        _pr_bad=${_pr_bad#"$2/env/"}
        case $_pr_bad in *[!\ -~]*) _pr_bad="a member whose name has unprintable characters" ;; esac
        _pr_why="it holds $_pr_bad, a device node, FIFO or socket (or a setuid file or a closed directory whose mode could not be changed); conda environments never do, so the archive is refused"
        return 1
    fi
}

# Print $1 (lines of tar's stderr: member names from the archive) on stderr, any byte that is not printable
# ASCII shown as "?": an escape sequence in a member name must not reach the task's output raw.
_pr_say() {
    case $1 in
        *[!"$_pr_nl"\ -~]*) printf '%s' "$1" | LC_ALL=C tr -c '\n -~' '?' >&2 ;;
        *) printf '%s' "$1" >&2 ;;
    esac
}

# The floor check of tarball $1 before it is unpacked (poncho_floor_ok above): its poncho/floor is the archive's
# first member (poncho_wq/pack.py), so only the start of the stream is read: head stops after 64 KiB and gzip
# then dies of SIGPIPE (its complaint, when SIGPIPE is ignored, goes to /dev/null), tar stops at the end of its
# input, having written the member.  A tarball without it (made before floors, by conda-pack itself, or not
# gzip'd) is not checked.  Once per run: the code layer's cold path checks the base first.  Failing: exit 4.
_pr_floor_done=
_pr_floorcheck() {
    [ -z "$_pr_floor_done" ] && [ "${PONCHO_SKIP_FLOOR_CHECK:-}" != 1 ] || return 0
    _pr_floor_done=1
    _pr_ft=$(gzip -dc -- "$1" 2>/dev/null | head -c 65536 | tar -xOf - poncho/floor 2>/dev/null)
    [ -z "$_pr_ft" ] || poncho_floor_ok poncho_package_run "$_pr_ft" "${1##*/}" || exit 4
    _pr_mark "floor check"
}

# Move every entry of $1 (dot files too) into $2, in one mv.
_pr_moveup() {
    _from=$1
    _into=$2
    set --
    for _f in "$_from"/* "$_from"/.[!.]* "$_from"/..?*; do
        if [ -e "$_f" ] || [ -L "$_f" ]; then set -- "$@" "$_f"; fi
    done
    [ "$#" -eq 0 ] || mv -- "$@" "$_into"/
}

# Append "<epoch> <pid> <id $2>" to log $1 (<root>/unpack.log, DIR/.poncho_unpack.log), opened as a lock file
# is (never through a link: _pr_openlock).  One line per unpack; past 1 MiB it is moved to $1.1 (replacing the
# one before), so that it stays bounded.  Cold path.
# The size check and the date: once per run (_pr_logprep, which an assembly calls before it unpacks its parts
# side by side), not once per line.
_pr_logt=
_pr_logprep() {
    [ -z "$_pr_logt" ] || return 0
    _pr_logt=$(date +%s)
    _pr_lsz=$(stat -c %s -- "$1" 2>/dev/null) || _pr_lsz=0
    case $_pr_lsz in '' | *[!0-9]* | ????????????*) _pr_lsz=0 ;; esac
    [ "$_pr_lsz" -gt 1048576 ] || return 0
    [ -f "$1" ] && [ ! -L "$1" ] && { [ -z "$_pr_mine" ] || [ -O "$1" ]; } || return 0
    mv -f -T -- "$1" "$1.1" 2>/dev/null || :
}
_pr_log() {
    _pr_logprep "$1"
    _pr_openlock 5 "$1" || return 0
    { printf '%s %s %s\n' "$_pr_logt" $$ "$2" >&5; } 2>/dev/null || :
    exec 5>&-
}

# --- PONCHO_ENV_KEEP / PONCHO_ENV_BUDGET_MB: evict least recently used environments (flock only) ----------
# "In use" = a shared flock on <root>/.<id>.lock, held by every run of that id (base: fd 9, code layer: fd 8)
# for the life of its command (which inherits them, each also as a second descriptor, 7 and 6: a command that
# reuses fd 9 for a lock of its own, `exec 9>mylock; flock 9` as in flock(1), would otherwise drop the use lock
# and let another task evict the environment under it; one that closes every descriptor still does).  The
# records live inside the entry they describe (a root may be shared with other users: there, a record beside the
# entries was a name anyone could plant as a link, and the shim truncated or wrote the file it led to): "used" =
# the mtime of <entry>/.poncho_used, touched by every run (a builtin redirection, no fork); its size =
# <entry>/.poncho_size, KiB written into the tree before its rename (du -sk of the fresh tree, on the cold path),
# so that eviction reads one small file per entry and never walks a tree.  An entry unpacked while neither
# setting was on has neither: it gets a .poncho_used with its directory's mtime and is measured once, here, and
# recorded.  A .poncho_used dated in the future (a bad clock, an archive's future mtime copied by that
# adoption) would stay the most recent for ever: it is set back to 2000-01-01, least recently used.
# Eviction runs after an unpack, when the run holds the use locks of its own base and code layer (so neither
# can be taken from under it), and removes an entry only under an exclusive, non-blocking flock of its lock:
# one in use by any task is never touched.  Only entries of this user count and go (in a root shared with others,
# theirs are not ours to measure or remove).  PONCHO_ENV_KEEP=N: the base environments (not code layers) beyond
# the N most recently used go.  PONCHO_ENV_BUDGET_MB=M: then, oldest first, idle entries (bases and code
# layers) go until the recorded sizes of what is left add up to at most M MiB, or only entries in use are left
# (those may exceed the budget: a task is never refused for lack of budget).  The lock file of an entry that went,
# or of an id that has no entry (a run refused before unpacking), is removed too, under that lock: a task that
# was waiting on it finds, once it has the lock, that the file at the path is another one, and takes that one
# (_pr_lock, _pr_uselock: through /dev/fd; where there is no /dev/fd, lock files are kept).
# The default budget (issue 27): a root the shim makes itself (below) outlives the worker's workspace, so without
# a limit it would only grow; PONCHO_ENV_BUDGET_MB=off turns it off (a PONCHO_ENV_DIR gets none unless set).
_pr_default_budget=10240
_pr_keep=
_pr_budget=
_pr_managed=
if [ -n "${PONCHO_ENV_KEEP:-}${PONCHO_ENV_BUDGET_MB:-}" ] && [ "${PONCHO_LOCK:-}" != mkdir ] &&
    command -v flock >/dev/null 2>&1; then
    # At most 9 digits, leading zeros dropped: sh arithmetic reads 010 as octal and dies on 08 or on a number
    # past 64 bits (dash: "Illegal number", exit 2 after the unpack, the command never run).
    case ${PONCHO_ENV_KEEP:-} in *[!0-9]* | ??????????*) _pr_die 1 "PONCHO_ENV_KEEP must be a number, not '$PONCHO_ENV_KEEP' (at most 9 digits)" ;; esac
    case ${PONCHO_ENV_BUDGET_MB:-} in
        off) ;;
        *[!0-9]* | ??????????*) _pr_die 1 "PONCHO_ENV_BUDGET_MB must be a whole number of MiB or off, not '$PONCHO_ENV_BUDGET_MB' (at most 9 digits)" ;;
    esac
    _pr_keep=${PONCHO_ENV_KEEP:-}
    _pr_budget=${PONCHO_ENV_BUDGET_MB:-}
    [ "$_pr_budget" != off ] || _pr_budget=
    [ -z "$_pr_keep" ] || { _pr_keep=${_pr_keep#"${_pr_keep%%[!0]*}"}; _pr_keep=${_pr_keep:-0}; }
    [ -z "$_pr_budget" ] || { _pr_budget=${_pr_budget#"${_pr_budget%%[!0]*}"}; _pr_budget=${_pr_budget:-0}; }
    [ -z "$_pr_keep$_pr_budget" ] || _pr_managed=1
fi
_pr_evict_needed=

# Remove entry $2 of root $1 unless it is in use, and its lock file; status 0 when it is gone.  A subshell: its
# lock (fd 7) and temp dir end with it.
_pr_evict1() (
    _pr_trashd=
    case $2 in part-*) ! _pr_partbusy "$1" "$2" || exit 1 ;; esac
    _pr_openlock 7 "$1/.$2.lock" || exit 1
    flock -xn 7 || exit 1
    [ ! -e /dev/fd/7 ] || [ "$1/.$2.lock" -ef /dev/fd/7 ] || exit 1
    if [ -e "$1/$2" ] || [ -L "$1/$2" ]; then
        _pr_discard "$1/$2" "$2" || exit 1
    fi
    # Records of older shims, beside the entry.
    rm -f -- "$1/.$2.used" "$1/.$2.size"
    [ ! -e /dev/fd/7 ] || rm -f -- "$1/.$2.lock"
    _pr_untrash
)

# The recorded size (KiB) of entry $2 of root $1 in _pr_kb (measured and recorded when missing).
_pr_sizeof() {
    _pr_kb=
    { IFS= read -r _pr_kb <"$1/$2/.poncho_size"; } 2>/dev/null || :
    # Digits only, at most 12 (a planted or damaged file must not end the shell in $((...)): see above).
    case $_pr_kb in
        '' | *[!0-9]* | ?????????????*)
            _pr_kb=$(du -sk -- "$1/$2" 2>/dev/null) || :
            _pr_kb=${_pr_kb%%[!0-9]*}
            { command printf '%s\n' "${_pr_kb:=0}" >"$1/$2/.poncho_size"; } 2>/dev/null || : ;;
    esac
    _pr_kb=${_pr_kb#"${_pr_kb%%[!0]*}"}
    _pr_kb=${_pr_kb:-0}
}

# Remove $3, the leftover <root>/.<id $2>.tmp.* of a killed shim, when nobody holds the id's lock (an unpack or
# an eviction in progress holds it exclusively); status 0 when it is gone.
_pr_sweep1() (
    _pr_trashd=
    _pr_openlock 7 "$1/.$2.lock" || exit 1
    flock -xn 7 || exit 1
    _pr_discard "$3" "$2" || exit 1
    _pr_untrash
)

# Status 0 when $1/$2 is an entry this user's shims made: a real directory of ours, marked ready (in a shared
# PONCHO_ENV_DIR another user may plant names that are no cache entry, or entries of theirs).
_pr_isentry() {
    case $2 in '' | */* | .*) return 1 ;; esac
    [ -d "$1/$2" ] && [ ! -L "$1/$2" ] && [ -O "$1/$2" ] && [ -f "$1/$2/.poncho_ready" ]
}

_pr_evict() { # $1 root
    _pr_evict_needed=
    _k=0
    _tot=0
    _pr_gethost
    # Leftovers of shims killed while they evicted or unpacked (.<id>.tmp.<pid>@<host>~<random>): counted in no
    # budget, and otherwise removed only when that very id is unpacked again.  A live pid's of this host are
    # spared; another host's are left to _pr_sweep1's lock (this runs under flock only: see "Several hosts" above).
    for _e in "$1"/.*.tmp.*; do
        [ -d "$_e" ] && [ -O "$_e" ] || continue
        _id=${_e##*/}
        _id=${_id%@*}
        _id=${_id#.}
        _id=${_id%.tmp.*}
        _pr_tmpowner "$_e"
        case ${_pr_tow##*:} in '' | *[!0-9]*) continue ;; esac
        ! _pr_islocal "$_pr_tow" || _pr_local_dead "$_pr_tow" || continue
        _pr_sweep1 "$1" "$_id" "$_e" || :
    done
    # Lock files of ids without an entry (a run refused before unpacking; older shims kept those of evicted ones).
    for _e in "$1"/.*.lock; do
        [ -f "$_e" ] && [ -O "$_e" ] || continue
        _id=${_e##*/}
        _id=${_id#.}
        _id=${_id%.lock}
        [ -e "$1/$_id" ] || [ -L "$1/$_id" ] || _pr_evict1 "$1" "$_id" || :
    done
    # Entries unpacked while neither setting was on have no .poncho_used: adopted with their directory's mtime
    # (when they were made), once.  One in the future goes back to 2000 (see above): "newer than our own, just
    # touched".
    _ref=$1/$_pr_id/.poncho_used
    for _e in "$1"/*; do
        _pr_isentry "$1" "${_e##*/}" || continue
        if [ ! -e "$_e/.poncho_used" ]; then
            touch -r "$_e" -- "$_e/.poncho_used" 2>/dev/null || :
        fi
        if [ "$_e/.poncho_used" -nt "$_ref" ]; then touch -c -t 200001010000 -- "$_e/.poncho_used" 2>/dev/null || :; fi
    done
    # Newest first: the count (bases only), and the total of what stays.  The list is word-split: no globbing.
    set -f
    for _u in $(set +f; cd "$1" && ls -1t -- */.poncho_used 2>/dev/null); do
        _id=${_u%/.poncho_used}
        _pr_isentry "$1" "$_id" || continue
        case $_id in
            code-* | part-*) ;;
            *)  _k=$((_k + 1))
                if [ -n "$_pr_keep" ] && [ "$_k" -gt "$_pr_keep" ] && _pr_evict1 "$1" "$_id"; then continue; fi ;;
        esac
        if [ -n "$_pr_budget" ]; then
            _pr_sizeof "$1" "$_id"
            _tot=$((_tot + _pr_kb))
        fi
    done
    set +f
    [ -n "$_pr_budget" ] && [ "$_tot" -gt $((_pr_budget * 1024)) ] || return 0
    # Oldest first, until the budget holds.
    set -f
    for _u in $(set +f; cd "$1" && ls -1tr -- */.poncho_used 2>/dev/null); do
        _id=${_u%/.poncho_used}
        _pr_isentry "$1" "$_id" || continue
        _pr_sizeof "$1" "$_id"
        if _pr_evict1 "$1" "$_id"; then
            _tot=$((_tot - _pr_kb))
            [ "$_tot" -gt $((_pr_budget * 1024)) ] || break
        fi
    done
    set +f
}

# Take the use lock of entry $2 on fd $1 (8 or 9: code layer or base) and mark it used.  An existing lock file is
# opened read-only when it cannot be opened for writing (a read-only root: a shared flock needs no write access,
# and nobody can evict there anyway); never through a link (_pr_openlock).  All builtins but flock.
_pr_uselock() {
    while :; do
        _pr_openlock "$1" "$_pr_root/.$2.lock" || case $? in
            3) _pr_die 4 "the use lock $_pr_root/.$2.lock is a symbolic link, not a regular file, or another user's: not trusted (remove it, or set PONCHO_ENV_DIR to a directory of yours)" ;;
            *) _pr_die 3 "cannot open the use lock $_pr_root/.$2.lock: read-only file system or no write permission (set PONCHO_ENV_DIR to a writable directory)" ;;
        esac
        flock -s -w "$_pr_wait" "$1" || _pr_die 4 "timed out after $_pr_wait s waiting for the use lock in $_pr_root"
        # Removed by an eviction while we waited (see _pr_evict1): take the one now at its path.
        [ ! -e "/dev/fd/$1" ] || [ "$_pr_root/.$2.lock" -ef "/dev/fd/$1" ] && break
        eval "exec $1>&-"
    done
    { command : >"$_pr_root/$2/.poncho_used"; } 2>/dev/null || :
}

# After _pr_extract of entry $2 (holding its exclusive lock on fd 9): keep that lock, shared, on fd $1 as the
# use lock of the command.  flock(2) converts a lock by dropping it and taking the new one, so an evictor may slip
# into that window: status 1 then (the entry is gone; the caller extracts it again).
_pr_keepuse() {
    { command : >"$_pr_root/$2/.poncho_used"; } 2>/dev/null || :
    [ "$1" = 9 ] || { eval "exec $1>&9"; exec 9>&-; }
    flock -s "$1" || _pr_die 4 "cannot take the use lock in $_pr_root"
    _pr_lockmode=
    _pr_evict_needed=1
    [ -f "$_pr_root/$2/.poncho_ready" ]
}

# _pr_unpackkept FD ID DIR WHAT CMD [ARG...]: run CMD ARG... (an _pr_extract of entry ID, which leaves its lock
# held) until the entry is there to use.  Managed under flock, the lock becomes the use lock on fd FD
# (_pr_keepuse); an evictor that slipped into that window removed the entry, so it is unpacked again, and the
# third time the shim gives up ("DIR was evicted three times while it was being WHAT: raise" the settings that
# evict: PONCHO_ENV_BUDGET_MB, PONCHO_ENV_KEEP or both).  Otherwise the lock is released.  The one loop of the
# environment, the code layer and an assembly from parts.
_pr_unpackkept() {
    _pr_kfd=$1 _pr_kid=$2 _pr_kdir=$3 _pr_kwhat=$4
    shift 4
    _pr_n=0
    while :; do
        "$@"
        if [ -z "$_pr_managed" ] || [ "$_pr_lockmode" != flock ]; then _pr_unlock; return 0; fi
        ! _pr_keepuse "$_pr_kfd" "$_pr_kid" || return 0
        eval "exec $_pr_kfd>&-"
        _pr_n=$((_pr_n + 1))
        [ "$_pr_n" -lt 3 ] || break
    done
    # The settings that evict (PONCHO_ENV_KEEP alone makes a root managed too).
    _pr_kfix=${_pr_budget:+PONCHO_ENV_BUDGET_MB}
    [ -z "$_pr_keep" ] || _pr_kfix=${_pr_kfix:+$_pr_kfix or }PONCHO_ENV_KEEP
    _pr_die 4 "$_pr_kdir was evicted three times while it was being $_pr_kwhat: raise $_pr_kfix"
}

# --- the per-worker root (base environments and code layers) ------------------------------------------
# _pr_own: the root is one this shim makes itself (not PONCHO_ENV_DIR, which is used as given: whoever sets it
# vouches for who can write there).  "private" = <dir>/poncho-<uid>, <dir> being the directory that holds a
# worker's workspace (it outlives the workspace, see below), else ${TMPDIR:-/tmp}.
# A root of our own must be a real directory owned by us, checked before any use, warm path included.  In a
# shared /tmp another user can plant poncho-<uid> -> /tmp (a directory root owns, so [ -O ] alone passes: it
# follows links) next to a "ready" env-<hex>/ whose activate.d script the next task would run; hence [ -L ]
# first.  The env dir must be ours too: only we (or root) can make a directory owned by us, and only its owner
# can write in it, so its .poncho_ready and activation scripts are then ours as well.  The root's mode (0700 for
# the private root) needs a stat, a fork: it is checked where
# the root is created and on every cold path, not on the warm path, because ownership of root and env dir is
# what the warm path relies on (others cannot chmod our directory, and whatever they may have put into a root
# with a loose mode is not owned by us, so it is refused here).  All tests here are fork-free builtins.
#
# Shared parents (issue 29).  Checks of a path are only worth something while nobody else can change what the
# path names.  In a directory every user can write to WITHOUT the sticky bit, anyone can rename any entry, ours
# included: renameat2(RENAME_EXCHANGE) swapped a planted tree for the private root or an --unpack-to DIR between
# the shim's checks and its use, or under the running command (which reads its environment by path), so no check
# can help there: such a directory anywhere above a root or an --unpack-to DIR is refused (exit 4, naming it and
# the fix: chmod +t, or another directory).  In a sticky one (/tmp), others cannot rename or remove our entries,
# but can create any name first, so a name there must be ours (or root's), checked once it exists: an --unpack-to
# DIR is trusted only after mkdir -p made it (another user renamed a ready-looking directory onto the name
# between the old check and mkdir -p).  _pr_safedir checks both, on the path as given and its physical path, in
# one stat, on cold paths (where a root or DIR is made or unpacked into); a warm path uses what a cold path
# checked: an entry of ours exists only where a cold path passed.  Directories writable by a group (not by
# everyone) are taken as the user's choice: that group is trusted.
#
# Shared roots.  _pr_mine: every entry of the root must be ours: a root of our own, and a PONCHO_ENV_DIR with the
# sticky bit (a directory several users share, like /tmp: a name another user made first there is theirs, and
# their "ready" environment would run as us).  A PONCHO_ENV_DIR without it is used as given, as before.  In
# either, the files the shim keeps there besides entries are never opened through a link: lock files are made
# with noclobber and opened only as regular files (_pr_openlock), the records of PONCHO_ENV_KEEP and
# PONCHO_ENV_BUDGET_MB (last use, size) live inside the entries they describe, which the trust checks cover.
_pr_mine=
_pr_squat=
_pr_setroot() {
    [ -z "$_pr_root" ] || return 0
    _pr_own=
    if [ -n "${PONCHO_ENV_DIR:-}" ]; then
        _pr_root=$PONCHO_ENV_DIR
    else
        # On a worker: the directory that holds its workspace (<dir>/worker-<uid>-<pid>/..., WORKER_TMPDIR lies
        # inside it), which the worker's --workdir chose and which outlives the workspace: Work Queue empties the
        # workspace at every manager disconnect, and the next workflow's tasks would unpack everything again.
        _pr_root=
        case ${WORKER_TMPDIR:-} in /?*/worker-[0-9]*-[0-9]*/*) _pr_root=${WORKER_TMPDIR%/worker-[0-9]*-[0-9]*/*} ;; esac
        [ -n "$_pr_root" ] || _pr_root=${TMPDIR:-/tmp}
        case $_pr_root in "$PWD" | "$PWD"/* | [!/]*) _pr_root=/tmp ;; esac
        _pr_getuid
        _pr_root=$_pr_root/poncho-$_pr_uid
        _pr_own=private
        # Anyone can create names in /tmp: when another user made poncho-<uid> first (or it is a link, or not a
        # directory), the user's own cache directory is the root instead of every task failing; only an
        # absolute XDG_CACHE_HOME, or a HOME that is a directory of ours (a worker may have HOME=/ or none).
        if [ -L "$_pr_root" ] || { [ -e "$_pr_root" ] && { [ ! -d "$_pr_root" ] || [ ! -O "$_pr_root" ]; }; }; then
            _pr_alt=
            case ${XDG_CACHE_HOME:-} in /?*) _pr_alt=$XDG_CACHE_HOME ;; esac
            case ${HOME:-} in
                /?*) if [ -z "$_pr_alt" ] && [ -d "$HOME" ] && [ -O "$HOME" ]; then _pr_alt=$HOME/.cache; fi ;;
            esac
            if [ -n "$_pr_alt" ]; then
                _pr_squat=$_pr_root
                _pr_root=${_pr_alt%/}/poncho-envs
            fi
        fi
    fi
    case $_pr_root in /*) ;; *) _pr_root=$PWD/$_pr_root ;; esac
    _pr_root=${_pr_root%/}
    if [ -z "$_pr_own" ]; then
        if [ -k "$_pr_root" ]; then _pr_mine=1; fi
        return 0
    fi
    _pr_mine=1
    # The default budget, on roots of our own only (see _pr_evict).
    if [ -z "${PONCHO_ENV_BUDGET_MB:-}" ] && [ "${PONCHO_LOCK:-}" != mkdir ] && command -v flock >/dev/null 2>&1; then
        _pr_budget=$_pr_default_budget
        _pr_managed=1
    fi
    if [ -L "$_pr_root" ]; then
        _pr_die 4 "$_pr_root is a symbolic link, not a directory of this user: not trusted (remove it, or set PONCHO_ENV_DIR to a directory of yours${_pr_squat:+; $_pr_squat is not one either})"
    elif [ -e "$_pr_root" ] && { [ ! -d "$_pr_root" ] || [ ! -O "$_pr_root" ]; }; then
        _pr_die 4 "$_pr_root belongs to another user or is not a directory: not trusted (set PONCHO_ENV_DIR to a directory of yours${_pr_squat:+; $_pr_squat is not one either})"
    fi
}

# $1 = an env dir or code layer dir in a root whose entries must be ours: made by us, or refused.
_pr_trustdir() {
    if [ -n "$_pr_mine" ] && { [ -L "$1" ] || { [ -e "$1" ] && [ ! -O "$1" ]; }; }; then
        _pr_die 4 "$1 was not made by this user (a symbolic link or another owner): not trusted (remove it, or set PONCHO_ENV_DIR to a directory of yours)"
    fi
}

# Cold path: create the root, checking its mode.
_pr_mkroot() {
    [ -z "$_pr_squat" ] ||
        printf 'poncho_package_run: warning: %s\n' "$_pr_squat is not a directory of this user (another user made it first?): using $_pr_root instead (remove it, or set PONCHO_ENV_DIR)" >&2
    if [ -n "$_pr_own" ]; then
        mkdir -p -m 700 -- "$_pr_root" || _pr_die 3 "cannot create $_pr_root"
        # Again, now that it exists (it may have been made between the check above and mkdir -p), with the mode.
        [ ! -L "$_pr_root" ] && [ -d "$_pr_root" ] && [ -O "$_pr_root" ] ||
            _pr_die 4 "$_pr_root is a symbolic link or belongs to another user: not trusted (set PONCHO_ENV_DIR to a directory of yours)"
        _pr_mode=$(stat -c %a -- "$_pr_root") || _pr_die 4 "cannot stat $_pr_root"
        # Last two octal digits: group and others (a setgid bit inherited from the parent is fine).
        case $_pr_own:${_pr_mode#"${_pr_mode%??}"} in
            private:00) ;;
            *) _pr_die 4 "$_pr_root has mode $_pr_mode, not 700: other users may have put environments in it (remove it, or set PONCHO_ENV_DIR to a directory of yours)" ;;
        esac
    else
        mkdir -p -- "$_pr_root" || _pr_die 3 "cannot create $_pr_root"
    fi
    case $_pr_own in
        private) _pr_safedir "$_pr_root" "$_pr_root" "point TMPDIR or PONCHO_ENV_DIR at a directory of yours" ;;
        *) _pr_safedir "$_pr_root" "$_pr_root" "set PONCHO_ENV_DIR to a directory of yours" ;;
    esac
}

# Remove $1, a temp dir or entry of id $2 in the root, by first moving it into a private temp dir of ours (named
# like a temp dir of ours, so that a shim killed meanwhile leaves a leftover swept as any other): whoever may still
# be working in $1 (a lock broken by mistake) finds its path gone at its next step and fails, instead of going on
# with a tree deleted under it.  That temp dir, _pr_trashd, is deleted by _pr_untrash, which _pr_extract calls
# when its own unpack is done: a tar still writing into a moved tree would otherwise keep rm -rf from emptying
# it.  Status 1: $1 could not be moved.
_pr_trashd=
_pr_discard() {
    _pr_gethost
    if [ -z "$_pr_trashd" ]; then
        _pr_trashd=$(mktemp -d "$_pr_root/.$2.tmp.$$@$_pr_host~XXXXXX" 2>/dev/null) || { _pr_trashd=; return 1; }
    fi
    mv -- "$1" "$_pr_trashd/" 2>/dev/null && return 0
    # Not moved: no empty temp dir left for it.
    ! rmdir -- "$_pr_trashd" 2>/dev/null || _pr_trashd=
    return 1
}

_pr_untrash() {
    if [ -n "$_pr_trashd" ]; then
        _pr_rmtree "$_pr_trashd"
        # A tar still writing into a tree moved here can add entries while rm empties it, and rm then fails on a
        # directory not empty: try again while that tar finishes (up to 2 s; a leftover is swept later anyway).
        _pr_ut=0
        while { [ -e "$_pr_trashd" ] || [ -L "$_pr_trashd" ]; } && [ "$_pr_ut" -lt 20 ]; do
            _pr_ut=$((_pr_ut + 1))
            sleep 0.1 2>/dev/null || sleep 1
            _pr_rmtree "$_pr_trashd"
        done
    fi
    _pr_trashd=
}

# rm -rf, also of a tree holding directories without owner write or search permission (an archive's mode 000 or
# 0555 directory: GNU tar applies such modes once a directory's files are in), which rm alone cannot empty.
_pr_rmtree() {
    rm -rf -- "$1" 2>/dev/null || { chmod -R u+rwx -- "$1" 2>/dev/null; rm -rf -- "$1" 2>/dev/null; } || :
}

# Cold path: $1 tarball (absolute), $2 id; $3 = "norelocate" for a code layer (it holds no prefix).  Takes the
# id's lock and returns holding it (the caller unlocks, or keeps it as the use lock); <root>/$2 is then ready.
#
# What makes a ready environment complete even when two shims unpack the same id at once (a lock broken for its
# age while its holder was alive, see "Several hosts"): the archive is extracted into a new private temp dir
# (mktemp -d) that nothing but its owner uses by path; nobody deletes another's temp dir or an entry in place,
# only after moving it away (_pr_discard), so an owner whose temp dir was taken fails at its next step; the
# marker .poncho_ready is kept outside the tree until the rename of the tree to <root>/$2 has won, and is then
# moved in by the winner alone, after it read back from <root>/$2 the name of its own temp dir (.poncho_staging,
# written into the tree after extraction).  The loser's rename fails and it uses the winner's tree once marked.
_pr_xfail() { # $1 exit status, $2 message: _pr_extract gives up (its temp dirs removed, its lock released)
    _pr_rmtree "$_pr_s"
    _pr_untrash
    _pr_unlock
    _pr_die "$1" "$2"
}

_pr_extract() {
    _pr_s=
    _pr_lock "$_pr_root/.$2.lock" "$_pr_root/.$2.lockd" "$_pr_root" ||
        _pr_lockfail $? "$_pr_root" "set PONCHO_ENV_DIR to a writable directory"
    _pr_mark "lock wait"
    _pr_xd=$_pr_root/$2
    [ ! -f "$_pr_xd/.poncho_ready" ] || return 0
    _pr_gethost
    # Leftovers of killed shims.  Under flock nobody else can be extracting this id (on any host sharing the
    # root: see "Several hosts" above); under the mkdir lock, only those of this host whose pid is gone (a live
    # one's lock was broken by mistake) and those of the owner of a foreign lock broken for its age.
    for _s in "$_pr_root/.$2.tmp."*; do
        { [ -e "$_s" ] || [ -L "$_s" ]; } && [ -O "$_s" ] || continue
        if [ "$_pr_lockmode" = mkdir ]; then
            _pr_tmpowner "$_s"
            _pr_local_dead "$_pr_tow" || [ "$_pr_tow" = "$_pr_brokeowner" ] || continue
        fi
        _pr_discard "$_s" "$2" || :
    done
    if [ -e "$_pr_xd" ] || [ -L "$_pr_xd" ]; then
        # Present but not ready: an unpack killed between its rename and its marker, an eviction cut short.
        _pr_discard "$_pr_xd" "$2" || _pr_xfail 3 "cannot remove $_pr_xd, which is not ready"
    fi
    _pr_s=$(mktemp -d "$_pr_root/.$2.tmp.$$@$_pr_host~XXXXXX" 2>/dev/null) ||
        _pr_xfail 3 "cannot create a directory in $_pr_root (read-only file system or no write permission?)"
    trap '_pr_rmtree "$_pr_s"; _pr_untrash; exit 143' HUP INT TERM
    _pr_xt=$1
    [ -z "$_pr_fetch" ] || [ "$2" != "$_pr_id" ] || _pr_fetchinto "$_pr_s"
    ${_pr_unpacker:-_pr_unpack} "$_pr_xt" "$_pr_s" || _pr_xfail 3 "could not extract $1 into $_pr_s: $_pr_why"
    _pr_mark extract
    { command printf '%s\n' "$_pr_s" >"$_pr_s/env/.poncho_staging"; } 2>/dev/null ||
        _pr_xfail 3 "cannot write in $_pr_s (disk full? or moved away by another shim that broke the lock)"
    if [ "${3:-}" != norelocate ] && [ -f "$_pr_s/env/bin/conda-unpack" ]; then
        # The relocator records the prefix in the tree's .poncho_ready: moved out of the tree until it is in place.
        if ! poncho_relocate "$_pr_s/env" "$_pr_xd" || ! mv -- "$_pr_s/env/.poncho_ready" "$_pr_s/.poncho_ready"; then
            _pr_xfail 4 "could not relocate $1 for $_pr_xd"
        fi
    elif ! { command printf '%s\n' "$_pr_xd" >"$_pr_s/.poncho_ready"; } 2>/dev/null; then
        _pr_xfail 3 "cannot write in $_pr_s (disk full?)"
    fi
    _pr_mark relocate
    if [ -n "$_pr_managed" ] && [ -z "$_pr_nosize" ]; then
        # Its size, once, while the tree is fresh in the page cache (see _pr_evict).
        _pr_kb=$(du -sk -- "$_pr_s/env" 2>/dev/null) || :
        { command printf '%s\n' "${_pr_kb%%[!0-9]*}" >"$_pr_s/env/.poncho_size"; } 2>/dev/null || :
        _pr_mark size
    fi
    if mv -T -- "$_pr_s/env" "$_pr_xd" 2>/dev/null; then
        _pr_n1=
        { IFS= read -r _pr_n1 <"$_pr_xd/.poncho_staging"; } 2>/dev/null || :
        if [ "$_pr_n1" != "$_pr_s" ] || ! mv -- "$_pr_s/.poncho_ready" "$_pr_xd/.poncho_ready" 2>/dev/null; then
            _pr_xfail 3 "$_pr_xd is not the tree this shim extracted (its lock was broken by another shim?): not marked ready"
        fi
        _pr_log "$_pr_root/unpack.log" "$2"
    else
        # Another shim's rename won (a lock broken by mistake): its tree is ready once it marked it.
        _pr_n1=0
        until [ -f "$_pr_xd/.poncho_ready" ] || [ "$_pr_n1" -ge 50 ]; do
            _pr_n1=$((_pr_n1 + 1))
            sleep 0.1 2>/dev/null || sleep 1
        done
        [ -f "$_pr_xd/.poncho_ready" ] || _pr_xfail 3 "could not rename $_pr_s/env to $_pr_xd"
    fi
    _pr_rmtree "$_pr_s"
    _pr_untrash
    trap - HUP INT TERM
}

# --- --fetch: the base tarball fetched on a miss only (the manager serves its cache; see docs/delivery.md) -------
# Called by _pr_extract for the base, holding the id's lock, after the ready test failed under it: so of the tasks
# of one worker (or of the hosts sharing a root) one fetches and the others wait and find the id ready; a ready id
# is never fetched.  $1 = _pr_extract's staging dir (mktemp -d, 0700, removed with it, a leftover swept as any other):
# the bytes land there and are kept only when their size and sha256 are the ones given (poncho_wq/worker/fetch.sh,
# the same code as Work Queue's url inputs); then the floor check, then the unpack of that file (_pr_xt).  On a
# failure nothing is marked ready and the exit status is the fetch's (2 HTTP error, 3 a failed transfer or other
# bytes, 4 a missing tool).  The fetch runs in a subshell: its one-letter names and functions stay there.
_pr_fetch=
_pr_fsha=
_pr_fsize=
_pr_ftime=300
_pr_fetchinto() {
    _pr_xt=$1/fetched.tar.gz
    (
        u=$_pr_fetch N=${_pr_env##*/} s=$_pr_fsize h=$_pr_fsha T=$_pr_ftime p=$1/fetch-note c=$_pr_xt t=$1/part
        @FETCH@
    ) 2>/dev/null
    _pr_mark fetch
    if [ ! -f "$_pr_xt" ]; then
        _pr_fl=
        _pr_fe=3
        _pr_fm="could not fetch ${_pr_env##*/} from $_pr_fetch (no note written: disk full?)"
        { IFS= read -r _pr_fl && IFS= read -r _pr_fe && IFS= read -r _pr_fm; } <"$1/fetch-note" 2>/dev/null || :
        case $_pr_fe in 2 | 3 | 4) ;; *) _pr_fe=3 ;; esac
        _pr_xfail "$_pr_fe" "$_pr_fm"
    fi
    # The floor of the fetched tarball (the one before the lock had no file to read).
    _pr_floor_done=
    ( _pr_floorcheck "$_pr_xt" ) || _pr_xfail 4 "${_pr_env##*/} was fetched but not unpacked: this worker is below its floor (above)"
}

# After the arguments: --fetch's own (a ready-made local file wins: nothing to fetch).
_pr_fetchargs() {
    [ -n "$_pr_fetch" ] || return 0
    case $_pr_fsha in
        ????????????????????????????????????????????????????????????????) ;;
        *) _pr_die 1 "--sha256 needs the 64 hex digits of the tarball's sha256, not '$_pr_fsha'" ;;
    esac
    case $_pr_fsha in *[!0-9a-f]*) _pr_die 1 "--sha256 needs 64 lowercase hex digits, not '$_pr_fsha'" ;; esac
    case $_pr_fsize in '' | *[!0-9]* | ?????????????????*) _pr_die 1 "--size needs the tarball's size in bytes, not '$_pr_fsize'" ;; esac
    case $_pr_ftime in '' | *[!0-9]* | ??????????*) _pr_die 1 "--fetch-timeout needs a whole number of seconds, not '$_pr_ftime'" ;; esac
    _pr_fid=${_pr_env##*/}
    case $_pr_fid in env-?*.tar.gz) ;; *) _pr_fid= ;; esac
    _pr_fid=${_pr_fid#env-}
    case ${_pr_fid%.tar.gz} in
        '' | *[!0-9a-f]*) _pr_die 1 "--fetch needs -e env-<hex>.tar.gz (the id of the tarball), not $_pr_env" ;;
    esac
    case $_pr_fetch in
        http://?* | https://?* | ftp://?*) ;;
        file:///*) case $_pr_fetch in *%*) _pr_die 1 "--fetch $_pr_fetch: a file:// URL with %-escapes is not supported here: use the path as is" ;; esac ;;
        *) _pr_die 1 "--fetch needs an http://, https://, ftp:// or file:/// URL, not $_pr_fetch" ;;
    esac
    [ -z "$_pr_to" ] || _pr_die 1 "--fetch uses the per-worker cache: it cannot be combined with --unpack-to"
    [ -z "$_pr_parts" ] || _pr_die 1 "--fetch fetches one tarball: it cannot be combined with --part"
    if [ -f "$_pr_env" ]; then _pr_fetch=; return 0; fi
    # A task waiting for the id's lock waits out the holder's whole fetch, then the lock wait proper (the unpack):
    # with equal defaults (300 s each) the tasks queued behind a slow fetch timed out on the lock while the fetch
    # still went well.  At most 9 digits, as --wait-for-lock.
    _pr_wait=$((_pr_wait + _pr_ftime))
    case $_pr_wait in ??????????*) _pr_wait=999999999 ;; esac
}

# --- Parts (issue 28, docs/parts.md): an environment assembled from content-addressed parts ---------------
# `--part FILE` (repeated, own part first) with `-e env-<hex>[.tar.gz]` (a name, not a file): each part-<hex>.tar.gz
# is unpacked once per worker into <root>/part-<hex> by _pr_extract (its lock, private temp dir, rename, marker:
# the rules of any entry), then the environment is assembled into <root>/env-<hex> by the same _pr_extract with
# _pr_assemble in place of tar: hard links (cp -al) from every part into one private temp dir, so that imports
# see one site-packages; relocated there (the relocator replaces a file, never writes into a linked one, so the
# parts stay as unpacked), marked ready, renamed.  The env lists its parts in .poncho_parts.  Budget: an env's
# .poncho_size is what it adds to its parts (du counts a hard-linked file once per run), the parts are entries of
# their own; a part is evicted only when no env lists it and no assembly runs (_pr_partbusy: assemblies hold
# <root>/.parts.lock shared on fd 4 from before they look at their parts until their env is ready).
_pr_parts=
_pr_nosize=
_pr_addpart() {
    case $1 in /*) _pr_parts=$_pr_parts$1$_pr_nl ;; *) _pr_parts=$_pr_parts$PWD/$1$_pr_nl ;; esac
}

# Run `$2 [$3 ...] LINE` for each line of list $1 (_pr_parts, _pr_miss: one path a line, any other character
# allowed), in order, with IFS as it was on entry and globbing on (set +f) while it runs.  The walk stops at the
# first non-zero status, which is then this function's (0: every line gave 0, or there was none); so a
# callback's `return N` ends the walk as a `return N` in a loop body did, and the caller passes it on by ending
# with this call or following it with `|| return`.  IFS and set +f are restored on every way out but an exit.
# Names _pr_ep_* are this function's (sh has no locals); its status is taken right after each callback, so a
# callback may walk another list, with IFS as it found it.
_pr_eachpart() {
    _pr_ep_l=$1
    shift
    _pr_ep_ifs=$IFS
    _pr_ep_s=0
    IFS=$_pr_nl
    set -f
    for _pr_ep_p in $_pr_ep_l; do
        IFS=$_pr_ep_ifs
        set +f
        "$@" "$_pr_ep_p"
        _pr_ep_s=$?
        [ "$_pr_ep_s" = 0 ] || break
    done
    IFS=$_pr_ep_ifs
    set +f
    return "$_pr_ep_s"
}

# The id (part-<hex>) of part file $1 in _pr_pid; content-named only (the unpacked copy is trusted by its name).
_pr_partid() {
    _pr_pid=${1##*/}
    _pr_pid=${_pr_pid%.tar.gz}
    case ${_pr_pid#part-} in '' | *[!0-9a-f]* | "$_pr_pid") _pr_die 1 "--part takes a part named part-<hex>.tar.gz (named by its content), not $1" ;; esac
}

# The id of the environment assembled from parts (-e env-<hex>[.tar.gz]: a name, not a file) in _pr_id.
_pr_envid() {
    _pr_id=${_pr_env##*/}
    _pr_id=${_pr_id%.tar.gz}
    case ${_pr_id#env-} in '' | *[!0-9a-f]* | "$_pr_id") _pr_die 1 "with --part, -e takes the environment's name env-<hex>, not $_pr_env" ;; esac
}

# An assembly's hold on <root>/.parts.lock, shared, on fd 4 (managed roots): no eviction removes a part meanwhile.
_pr_partslock() {
    [ -n "$_pr_managed" ] || return 0
    # A name another user made first in a shared root (a link, their file: they would hold its flock) is refused
    # as a planted use lock is (_pr_uselock); only a root that cannot be written is exit 3.
    _pr_openlock 4 "$_pr_root/.parts.lock" || case $? in
        3) _pr_die 4 "the parts lock $_pr_root/.parts.lock is a symbolic link, not a regular file, or another user's: not trusted (remove it, or set PONCHO_ENV_DIR to a directory of yours)" ;;
        *) _pr_die 3 "cannot open the parts lock $_pr_root/.parts.lock: read-only file system or no write permission (set PONCHO_ENV_DIR to a writable directory)" ;;
    esac
    flock -s -w "$_pr_wait" 4 || _pr_die 4 "timed out after $_pr_wait s waiting for $_pr_root/.parts.lock (an eviction?)"
}

# Status 0 when part $2 of root $1 must stay: an env lists it, an assembly is running (or the lock cannot be
# had).  Runs inside _pr_evict1's subshell: fd 3 keeps the exclusive lock until that subshell has removed it.
_pr_partbusy() {
    # _pr_evict lists entries under set -f; this runs in _pr_evict1's subshell, so globbing back on stays here.
    set +f
    _pr_openlock 3 "$1/.parts.lock" || return 0
    flock -xn 3 || return 0
    for _pr_pf in "$1"/env-*/.poncho_parts; do
        [ -f "$_pr_pf" ] || continue
        while IFS= read -r _pr_pl; do [ "$_pr_pl" != "$2" ] || return 0; done <"$_pr_pf"
    done
    return 1
}

# Every part unpacked into the root (those not ready yet), each marked used.  Under flock, on a worker with more
# than one core, two or more missing parts are unpacked side by side: one background subshell per part, each
# _pr_extract as it would run alone (its own lock on its own fd 9, its own temp dir, its own trap); the shim
# waits for all of them and then exits with the status of the first (in part order) that failed, whose message
# that subshell printed.  A signal to the shim meanwhile is passed on to the subshells.  Under the mkdir lock,
# one at a time: a subshell's $$ is the shim's, so its lock would name a pid that is not the unpacker's.
# Its walks over the parts (_pr_eachpart), each setting _pr_p and _pr_pid as its loop did:
_pr_partmiss() { # part $1 of ours (else exit 4), added to _pr_miss when it is not ready
    _pr_p=$1
    _pr_partid "$_pr_p"
    _pr_trustdir "$_pr_root/$_pr_pid"
    if [ ! -f "$_pr_root/$_pr_pid/.poncho_ready" ]; then
        _pr_miss=$_pr_miss$_pr_p$_pr_nl
        _pr_nmiss=$((_pr_nmiss + 1))
    fi
}
_pr_partget() { # part $1 unpacked, in a subshell of its own side by side; status 0 (a failure exits)
    _pr_p=$1
    _pr_partid "$_pr_p"
    if [ -n "$_pr_side" ]; then
        ( _pr_extract "$_pr_p" "$_pr_pid" norelocate; _pr_unlock ) &
        _pr_jobs="$_pr_jobs $!"
    else
        _pr_extract "$_pr_p" "$_pr_pid" norelocate
        _pr_unlock
    fi
    return 0
}
_pr_partused() { # part $1 marked used
    _pr_p=$1
    _pr_partid "$_pr_p"
    { command : >"$_pr_root/$_pr_pid/.poncho_used"; } 2>/dev/null || :
}
_pr_getparts() {
    _pr_miss=
    _pr_nmiss=0
    _pr_eachpart "$_pr_parts" _pr_partmiss
    _pr_side=
    if [ "$_pr_nmiss" -gt 1 ]; then
        _pr_lockrec "$_pr_root"
        if [ "$_pr_lmode" = flock ]; then
            _pr_ncpu=$(getconf _NPROCESSORS_ONLN 2>/dev/null) || _pr_ncpu=1
            case $_pr_ncpu in '' | *[!0-9]* | 0 | 1) ;; *) _pr_side=1 ;; esac
        fi
    fi
    _pr_jobs=
    if [ -n "$_pr_side" ]; then
        # What every subshell would otherwise ask again: once, here.
        _pr_tarprobe
        _pr_gethost
        _pr_logprep "$_pr_root/unpack.log"
        # The log made here if it is not there yet: its creator's descriptor does not append (noclobber), so a
        # subshell creating it would write its line over one another subshell appended meanwhile.
        if _pr_openlock 5 "$_pr_root/unpack.log"; then exec 5>&-; fi
        # shellcheck disable=SC2086 # a list of pids
        trap '[ -z "$_pr_jobs" ] || kill $_pr_jobs 2>/dev/null; exit 143' HUP INT TERM
    fi
    _pr_pst=0
    _pr_eachpart "$_pr_miss" _pr_partget
    for _pr_j in $_pr_jobs; do
        wait "$_pr_j" || { _pr_js=$?; [ "$_pr_pst" != 0 ] || _pr_pst=$_pr_js; }
    done
    if [ -n "$_pr_side" ]; then
        _pr_jobs=
        trap - HUP INT TERM
        [ "$_pr_pst" = 0 ] || exit "$_pr_pst"
        _pr_mark "parts side by side"
    fi
    _pr_eachpart "$_pr_parts" _pr_partused
}

# _pr_extract's unpacker for an assembly: $1 is unused (the parts are in _pr_parts), $2 the staging dir.  Status
# 1 (with _pr_why) at the first part that cannot be linked.
_pr_assemble() {
    _pr_why=
    _pr_ae=$2/env
    mkdir -- "$_pr_ae" 2>/dev/null || { _pr_why="cannot create $_pr_ae (read-only file system or no write permission?)"; return 1; }
    _pr_eachpart "$_pr_parts" _pr_linkpart
}
# Part $1 of _pr_assemble: its files hard-linked into _pr_ae, its id added to _pr_ae/.poncho_parts; or status 1.
_pr_linkpart() {
    _pr_p=$1
    _pr_partid "$_pr_p"
    _pr_pd=$_pr_root/$_pr_pid
    [ -f "$_pr_pd/.poncho_ready" ] || { _pr_why="part $_pr_pid is not unpacked"; return 1; }
    set --
    for _f in "$_pr_pd"/* "$_pr_pd"/.[!.]* "$_pr_pd"/..?*; do
        case ${_f##*/} in .poncho_*) continue ;; esac
        if [ -e "$_f" ] || [ -L "$_f" ]; then set -- "$@" "$_f"; fi
    done
    if [ "$#" -gt 0 ] && ! cp -al -- "$@" "$_pr_ae/" 2>/dev/null; then
        _pr_why="could not link the files of part $_pr_pid (another file system? disk full?)"
        return 1
    fi
    { command printf '%s\n' "$_pr_pid" >>"$_pr_ae/.poncho_parts"; } 2>/dev/null ||
        { _pr_why="cannot write in $_pr_ae"; return 1; }
}

# Record in the assembled env's .poncho_size what it adds to its parts (du counts each hard-linked file once per
# run: its last line).  A function of its own: `set --` here must not touch the command's arguments.
_pr_envsize() {
    set --
    # Not _pr_eachpart: the loop builds this function's own arguments, which a callback's `set --` cannot.
    _pr_ifs=$IFS
    IFS=$_pr_nl
    set -f
    for _pr_p in $_pr_parts; do IFS=$_pr_ifs; _pr_partid "$_pr_p"; set -- "$@" "$_pr_root/$_pr_pid"; done
    IFS=$_pr_ifs
    set +f
    _pr_dus=$(du -sk -- "$@" "$_pr_d" 2>/dev/null) || :
    _pr_kb=${_pr_dus##*"$_pr_nl"}
    case $_pr_kb in *"$_pr_d") ;; *) _pr_kb= ;; esac
    { command printf '%s\n' "${_pr_kb%%[!0-9]*}" >"$_pr_d/.poncho_size"; } 2>/dev/null || :
    # The same run's line of each part (one line per argument, each file counted where it is met first: the
    # parts share none) is its size: recorded for the parts that have none (those this run unpacked, with
    # _pr_nosize, and any unpacked while no budget was on), so that no part is walked twice.
    while IFS= read -r _pr_dl && [ "$#" -gt 0 ]; do
        case $_pr_dl in
            [0-9]*"$1")
                [ -f "$1/.poncho_size" ] ||
                    { command printf '%s\n' "${_pr_dl%%[!0-9]*}" >"$1/.poncho_size"; } 2>/dev/null || : ;;
        esac
        shift
    done <<EOF
$_pr_dus
EOF
}

# Part $1 of _pr_parts_run, before anything is unpacked: named by its content, readable, and (the first, the
# own part) within the worker's floor (the check finds the worker's C library by globs: set +f).
_pr_partcheck() {
    _pr_p=$1
    _pr_partid "$_pr_p"
    [ -f "$_pr_p" ] && [ -r "$_pr_p" ] || _pr_die 2 "part not found or unreadable: $_pr_p"
    _pr_floorcheck "$_pr_p"
    return 0
}

# One assembly of the environment from its parts (_pr_parts_run, through _pr_unpackkept): the entry's lock stays
# held, the parts' lock (fd 4) is released.
_pr_assembleonce() {
    _pr_partslock
    # Under flock with a budget, the parts this run unpacks and the environment are measured by one du
    # after the assembly (_pr_envsize), not each by its own.
    if [ -n "$_pr_managed" ]; then _pr_lockrec "$_pr_root"; fi
    if [ -n "$_pr_managed" ] && [ "$_pr_lmode" = flock ]; then _pr_nosize=1; fi
    _pr_getparts
    _pr_unpacker=_pr_assemble
    _pr_extract - "$_pr_id"
    _pr_unpacker=
    _pr_nosize=
    if [ -n "$_pr_managed" ] && [ "$_pr_lockmode" = flock ]; then
        _pr_envsize
    fi
    exec 4>&-
}

_pr_parts_run() {
    [ -z "$_pr_to" ] || _pr_die 1 "--part cannot be used with --unpack-to (parts are assembled in the per-worker cache)"
    _pr_envid
    _pr_setroot
    _pr_d=$_pr_root/$_pr_id
    _pr_trustdir "$_pr_d"
    if [ -n "$_pr_managed" ] && [ -d "$_pr_root" ]; then _pr_uselock 9 "$_pr_id"; fi
    if [ -f "$_pr_d/.poncho_ready" ]; then
        [ -z "$_pr_evict_needed" ] || _pr_evict "$_pr_root"
        _pr_exec "$_pr_d" "$@"
    fi
    exec 9>&-
    # Every part is there and named by its content before anything is unpacked; the own part (first) holds
    # poncho/floor as its first member.
    _pr_eachpart "$_pr_parts" _pr_partcheck
    _pr_mkroot
    _pr_unpackkept 9 "$_pr_id" "$_pr_d" assembled _pr_assembleonce
    # Twice: a part is older than the environments that list it, so a pass that evicts an environment has gone
    # past its parts already; the second pass (a no-op within the budget) takes those no environment lists now.
    if [ -n "$_pr_evict_needed" ]; then _pr_evict "$_pr_root"; _pr_evict "$_pr_root"; fi
    _pr_exec "$_pr_d" "$@"
}

# --- arguments ----------------------------------------------------------------------------------------
_pr_env=
_pr_to=
_pr_code=
_pr_xto=
_pr_cd=
_pr_root=
_pr_wait=300
_pr_need() { [ "$1" -ge 2 ] || { _pr_usage >&2; _pr_die 1 "option $2 needs an argument"; }; }
while [ $# -gt 0 ]; do
    case $1 in
        -e | --environment) _pr_need $# "$1"; _pr_env=$2; shift 2 ;;
        --environment=*) _pr_env=${1#*=}; shift ;;
        --part) _pr_need $# "$1"; _pr_addpart "$2"; shift 2 ;;
        --part=*) _pr_addpart "${1#*=}"; shift ;;
        --extract-to) _pr_need $# "$1"; _pr_xto=$2; shift 2 ;;
        --code) _pr_need $# "$1"; _pr_code=$2; shift 2 ;;
        --code=*) _pr_code=${1#*=}; shift ;;
        -d | -u | --unpack-to) _pr_need $# "$1"; _pr_to=$2; shift 2 ;;
        --unpack-to=*) _pr_to=${1#*=}; shift ;;
        --fetch) _pr_need $# "$1"; _pr_fetch=$2; shift 2 ;;
        --sha256) _pr_need $# "$1"; _pr_fsha=$2; shift 2 ;;
        --size) _pr_need $# "$1"; _pr_fsize=$2; shift 2 ;;
        --fetch-timeout) _pr_need $# "$1"; _pr_ftime=$2; shift 2 ;;
        -w | --wait-for-lock) _pr_need $# "$1"; _pr_wait=$2; shift 2 ;;
        --wait-for-lock=*) _pr_wait=${1#*=}; shift ;;
        --debug) PONCHO_DEBUG=1; shift ;;
        -h | --help) _pr_usage; exit 0 ;;
        --) shift; break ;;
        -?*) _pr_usage >&2; _pr_die 1 "unknown option: $1 (put -- before a command that starts with -)" ;;
        *) break ;;
    esac
done
case $_pr_wait in '' | *[!0-9]*) _pr_die 1 "--wait-for-lock needs a whole number of seconds, not '$_pr_wait'" ;; esac
# Leading zeros dropped and at most 9 digits (as PONCHO_ENV_KEEP: "08" is bad octal to sh arithmetic, dash's
# "Illegal number" under the mkdir lock; 25 digits made flock(1) time out at once).
_pr_wait=${_pr_wait#"${_pr_wait%%[!0]*}"}
_pr_wait=${_pr_wait:-0}
case $_pr_wait in ??????????*) _pr_die 1 "--wait-for-lock takes at most 9 digits of seconds, not '$_pr_wait'" ;; esac
[ -n "$_pr_env" ] || { _pr_usage >&2; _pr_die 1 "a tarball or directory must be given with --environment"; }
_pr_fetchargs
_pr_mark start

# --- --extract-to: extract only (TaskVine's unpack mini task, poncho_wq/taskvine.py) ----------------------------
# The tarball is extracted with _pr_unpack (pigz when present, the same refusals as every other path) into a 0700
# staging dir beside NEWDIR, whose env/ is then renamed to NEWDIR: NEWDIR exists only complete.  Nothing else:
# TaskVine moves NEWDIR into its cache, and bin/run_in_env checks the floor and relocates there, in the first task
# (whose output then says why when it cannot).  With --part (-e then names env-<hex>): each part is unpacked once
# per worker into the per-worker root, as for a task (its lock, trust checks, the unpack log), and NEWDIR is
# assembled from them by _pr_assemble (hard links: NEWDIR and the root must share a file system), holding
# <root>/.parts.lock shared meanwhile so that no eviction removes a part being linked.  The relocator replaces a
# file, never writes into a linked one, so the parts stay as unpacked.
_pr_xparts() {
    _pr_envid
    _pr_setroot
    _pr_mkroot
    _pr_partslock
    _pr_getparts  # every part is there and readable: _pr_xnote, which runs first, checked
}
# A part whose fetch failed (TaskVine's url mode, poncho_wq/taskvine.py _part_fetch) is the fetch's note (fetch.sh:
# poncho-fetch-failed, the exit code, the message), not a gzip.  Every part is checked (one `read` of its first
# line, no fork) before anything is unpacked; on a note NEWDIR becomes a stub environment whose bin/run_in_env
# fails every command with the note's code and message, as fetch.sh's vine-stub does for a whole tarball (so
# PonchoVineTask.shim_error reports it), and the shim exits 0 without touching the per-worker root: a part-<hex>
# made from a note would be taken for that part by every later environment, beyond the workflow.
# _pr_xnote looks at part $1 (called by _pr_eachpart): status 0, or exit.
_pr_xnote() {
    _pr_p=$1
    _pr_partid "$_pr_p"
    [ -f "$_pr_p" ] && [ -r "$_pr_p" ] || _pr_die 2 "part not found or unreadable: $_pr_p"
    _pr_fl= _pr_fe= _pr_fm=
    { IFS= read -r _pr_fl && IFS= read -r _pr_fe && IFS= read -r _pr_fm; } <"$_pr_p" 2>/dev/null || :
    [ "$_pr_fl" = poncho-fetch-failed ] || return 0
    case $_pr_fe in [1-9] | [1-9][0-9] | 1[0-9][0-9]) ;; *) _pr_fe=3 ;; esac
    [ -n "$_pr_fm" ] || _pr_fm="could not fetch ${_pr_p##*/} (its failure note says no more)"
    _pr_xs=$(mktemp -d "${_pr_xp:-/}/.poncho_extract.$$.XXXXXX" 2>/dev/null) ||
        _pr_die 3 "cannot create a directory in ${_pr_xp:-/} (read-only file system or no write permission?)"
    if mkdir -p "$_pr_xs/env/bin" "$_pr_xs/env/poncho" &&
        printf '%s\n' "$_pr_fe" >"$_pr_xs/env/poncho/fetch-code" &&
        printf '%s\n' "$_pr_fm" >"$_pr_xs/env/poncho/fetch-error" &&
        printf '%s\n' '#!/bin/sh' '[ "$#" -gt 0 ]||exit 0' 'd=${0%/*}/../poncho' \
            'printf "run_in_env: %s\n" "$(cat "$d/fetch-error")" >&2' 'exit "$(cat "$d/fetch-code")"' \
            >"$_pr_xs/env/bin/run_in_env" &&
        chmod 755 "$_pr_xs/env/bin/run_in_env" && mv -T -- "$_pr_xs/env" "$_pr_xto"; then
        _pr_rmtree "$_pr_xs"
        exit 0
    fi
    _pr_rmtree "$_pr_xs"
    _pr_die 3 "could not write the stub environment $_pr_xto for a part whose fetch failed ($_pr_fm)"
}
if [ -n "$_pr_xto" ]; then
    [ -z "$_pr_fetch$_pr_code$_pr_to" ] && [ "$#" -eq 0 ] ||
        _pr_die 1 "--extract-to takes only -e ENV.tar.gz, or -e env-<hex> and --part (no command, --fetch, --code or --unpack-to)"
    if [ -z "$_pr_parts" ]; then
        [ -f "$_pr_env" ] && [ -r "$_pr_env" ] || _pr_die 2 "environment file not found or unreadable: $_pr_env"
    fi
    [ ! -e "$_pr_xto" ] && [ ! -L "$_pr_xto" ] || _pr_die 1 "--extract-to $_pr_xto exists: it takes a new directory"
    case $_pr_xto in */*) _pr_xp=${_pr_xto%/*} ;; *) _pr_xp=. ;; esac
    [ -z "$_pr_parts" ] || _pr_eachpart "$_pr_parts" _pr_xnote
    [ -z "$_pr_parts" ] || _pr_xparts
    _pr_xs=$(mktemp -d "${_pr_xp:-/}/.poncho_extract.$$.XXXXXX" 2>/dev/null) ||
        _pr_die 3 "cannot create a directory in ${_pr_xp:-/} (read-only file system or no write permission?)"
    if [ -n "$_pr_parts" ]; then _pr_xun=_pr_assemble; else _pr_xun=_pr_unpack; fi
    if ! $_pr_xun "$_pr_env" "$_pr_xs"; then
        _pr_rmtree "$_pr_xs"
        _pr_die 3 "could not extract $_pr_env into $_pr_xto: $_pr_why"
    fi
    exec 4>&-
    mv -T -- "$_pr_xs/env" "$_pr_xto" || { _pr_rmtree "$_pr_xs"; _pr_die 3 "could not rename $_pr_xs/env to $_pr_xto"; }
    _pr_rmtree "$_pr_xs"
    _pr_mark extract
    exit 0
fi

# --- a code layer: unpacked once per worker before the base (see "Layers" above) ---------------------------
if [ -n "$_pr_code" ]; then
    [ -f "$_pr_code" ] && [ -r "$_pr_code" ] || _pr_die 2 "code layer not found or unreadable: $_pr_code"
    case $_pr_code in /*) ;; *) _pr_code=$PWD/$_pr_code ;; esac
    # Only content-named layers: the unpacked copy is found (and trusted) by this name alone.
    _pr_cid=${_pr_code##*/}
    _pr_cid=${_pr_cid%.tar.gz}
    case ${_pr_cid#code-} in '' | *[!0-9a-f]* | "$_pr_cid") _pr_die 1 "--code takes a code layer named code-<hex>.tar.gz (named by its content), not $_pr_code" ;; esac
    _pr_setroot
    _pr_cd=$_pr_root/$_pr_cid
    _pr_trustdir "$_pr_cd"
    if [ -n "$_pr_managed" ] && [ -d "$_pr_root" ]; then _pr_uselock 8 "$_pr_cid"; fi
    if [ ! -f "$_pr_cd/.poncho_ready" ]; then
        exec 8>&-
        # The base's floor before anything is unpacked (when the base is a tarball).
        if [ -f "$_pr_env" ]; then _pr_floorcheck "$_pr_env"; fi
        _pr_mkroot
        _pr_unpackkept 8 "$_pr_cid" "$_pr_cd" unpacked _pr_extract "$_pr_code" "$_pr_cid" norelocate
    fi
    _pr_mark code
fi

# --- an environment assembled from parts (see "Parts" above) -------------------------------------------
if [ -n "$_pr_parts" ]; then _pr_parts_run "$@"; fi

# --- an unpacked directory: use it in place ------------------------------------------------------------
if [ -d "$_pr_env" ]; then
    _pr_here=$PWD
    cd -P -- "$_pr_env" || _pr_die 2 "cannot enter environment directory $_pr_env"
    _pr_d=$PWD
    cd -- "$_pr_here" || _pr_die 4 "cannot return to $_pr_here"
    # Its activation scripts run as us: a directory another user made (in a shared /tmp, under a name we use)
    # is refused; root's (an environment installed for everybody) is fine.  A stat only when it is not ours.
    if [ ! -O "$_pr_d" ]; then
        _pr_o=$(stat -c %u -- "$_pr_d" 2>/dev/null) || _pr_o=
        [ "$_pr_o" = 0 ] ||
            _pr_die 4 "environment directory $_pr_d belongs to another user${_pr_o:+ (uid $_pr_o)}: not trusted, its activation scripts would run as you (use a directory of yours or root's)"
    fi
    if [ -f "$_pr_d/bin/conda-unpack" ] && ! _pr_ready_for "$_pr_d"; then
        poncho_floor_dir poncho_package_run "$_pr_d" || exit 4
        if [ -w "$_pr_d" ]; then
            poncho_relocate "$_pr_d" "$_pr_d" "$_pr_wait" || _pr_die 4 "could not relocate $_pr_d"
        fi
        _pr_mark relocate
    fi
    _pr_exec "$_pr_d" "$@"
fi
if [ -z "$_pr_fetch" ]; then
    [ -f "$_pr_env" ] && [ -r "$_pr_env" ] || _pr_die 2 "environment file not found or unreadable: $_pr_env"
fi
case $_pr_env in /*) ;; *) _pr_env=$PWD/$_pr_env ;; esac

# --- --unpack-to: upstream semantics, in place ---------------------------------------------------------
# Is $1 (absolute) inside the task sandbox the worker announced?
_pr_in_sandbox() {
    for _sb in "${WORK_QUEUE_SANDBOX:-}" "${VINE_SANDBOX:-}"; do
        [ -n "$_sb" ] || continue
        case $_sb in /*) ;; *) _sb=$PWD/$_sb ;; esac
        _sb=${_sb%/}
        case $1 in "$_sb"/?*) return 0 ;; esac
    done
    return 1
}
_pr_link=
if [ -n "$_pr_to" ]; then
    _pr_to=${_pr_to%/}
    case $_pr_to in /*) ;; '') _pr_to=/ ;; *) _pr_to=$PWD/$_pr_to ;; esac
    if { [ ! -e "$_pr_to" ] || [ -L "$_pr_to" ]; } && [ "${PONCHO_PRIVATE_UNPACK:-}" != 1 ] &&
        _pr_in_sandbox "$_pr_to"; then
        # A fresh per-task directory (see the header): use the per-worker cache, linked from there.  Or the link
        # an earlier task of the worker made there (Work Queue shares that sandbox between a worker's tasks): the
        # same cache route, so that this run too holds the entry's use lock (PONCHO_ENV_KEEP/BUDGET: without it
        # another task could evict the environment under the command) and a link left dangling by an eviction
        # is made again (_pr_linkto).
        if [ -L "$_pr_to" ]; then
            _pr_getuid
            [ "$(stat -c %u -- "$_pr_to" 2>/dev/null)" = "$_pr_uid" ] ||
                _pr_die 4 "--unpack-to $_pr_to is a symbolic link made by another user: not trusted (remove it, or choose another directory)"
        fi
        _pr_link=$_pr_to
        _pr_to=
    fi
fi
if [ -n "$_pr_to" ]; then
    # An existing target is used only when it is ours: a directory (or link) another user made, in /tmp say,
    # could hold a "ready" environment whose activate.d scripts we would run.  [ -O ] follows links, so a
    # link's own owner takes a stat (a fork, on this path only); a link must also lead to a directory of ours.
    if [ -L "$_pr_to" ]; then
        _pr_getuid
        [ "$(stat -c %u -- "$_pr_to" 2>/dev/null)" = "$_pr_uid" ] && [ -O "$_pr_to" ] ||
            _pr_die 4 "--unpack-to $_pr_to is a symbolic link made by another user or leading to a directory of another user: not trusted (remove it, or choose another directory)"
    elif [ -e "$_pr_to" ] && [ ! -O "$_pr_to" ]; then
        _pr_die 4 "--unpack-to $_pr_to belongs to another user: not trusted (remove it, or choose a directory of yours)"
    fi
    if _pr_ready_for "$_pr_to"; then _pr_exec "$_pr_to" "$@"; fi
    if [ -L "$_pr_to" ] && [ -d "$_pr_to" ]; then
        # A link to a ready environment (one this shim linked from an earlier task's --unpack-to, when the
        # worker shares that path between tasks): use its physical directory, already relocated for it.
        _pr_here=$PWD
        if cd -P -- "$_pr_to" 2>/dev/null; then
            _pr_tp=$PWD
            cd -- "$_pr_here" || _pr_die 4 "cannot return to $_pr_here"
            if _pr_ready_for "$_pr_tp"; then _pr_exec "$_pr_tp" "$@"; fi
        fi
    fi
    [ ! -e "$_pr_to" ] || [ -d "$_pr_to" ] || _pr_die 1 "--unpack-to $_pr_to exists and is not a directory"
    _pr_floorcheck "$_pr_env"
    mkdir -p -- "$_pr_to" || _pr_die 3 "could not create directory $_pr_to"
    # Trusted only now that it exists: the checks above ran before it did, and in a shared /tmp another user can
    # rename a ready-looking directory of theirs onto the name in between (mkdir -p then succeeds on it).  Once
    # ours, in a parent where others cannot rename it (_pr_safedir), it stays ours.
    _pr_getuid
    if [ -L "$_pr_to" ]; then
        [ "$(stat -c %u -- "$_pr_to" 2>/dev/null)" = "$_pr_uid" ] && [ -O "$_pr_to" ] ||
            _pr_die 4 "--unpack-to $_pr_to is a symbolic link made by another user or leading to a directory of another user: not trusted (remove it, or choose another directory)"
    elif [ ! -d "$_pr_to" ] || [ ! -O "$_pr_to" ]; then
        _pr_die 4 "--unpack-to $_pr_to belongs to another user: not trusted (remove it, or choose a directory of yours)"
    fi
    _pr_safedir "$_pr_to" "--unpack-to $_pr_to" "choose a directory of yours for --unpack-to" private
    _pr_lock "$_pr_to" "$_pr_to/.poncho_lockd" "$_pr_to" noage || _pr_lockfail $? "$_pr_to" "choose a writable --unpack-to"
    _pr_mark "lock wait"
    if [ -f "$_pr_to/.poncho_unpacking" ]; then
        # A killed attempt: wipe it (everything but our lock) and start again.
        for _f in "$_pr_to"/* "$_pr_to"/.[!.]* "$_pr_to"/..?*; do
            case $_f in "$_pr_to/.poncho_lockd" | "$_pr_to/.poncho_lockmode" | "$_pr_to/.poncho_unpacking") continue ;; esac
            [ -e "$_f" ] || [ -L "$_f" ] || continue
            rm -rf -- "$_f"
        done
    fi
    _pr_full=
    for _f in "$_pr_to"/* "$_pr_to"/.[!.]* "$_pr_to"/..?*; do
        case $_f in "$_pr_to/.poncho_lockd" | "$_pr_to/.poncho_lockmode" | "$_pr_to/.poncho_unpacking" | "$_pr_to/.poncho_unpack.log") continue ;; esac
        if [ -e "$_f" ] || [ -L "$_f" ]; then _pr_full=1; break; fi
    done
    if [ -z "$_pr_full" ] || [ -f "$_pr_to/.poncho_unpacking" ]; then
        # `command :`: a failed redirection on the special builtin : would end the shell (see _pr_lock).
        { command : >"$_pr_to/.poncho_unpacking"; } 2>/dev/null ||
            { _pr_unlock; _pr_die 3 "cannot write in $_pr_to (read-only file system or no write permission)"; }
        # Extracted and checked in a 0700 staging dir inside DIR (see _pr_unpack), then moved up.
        _pr_s=$(mktemp -d "$_pr_to/.poncho_tmp.$$.XXXXXX" 2>/dev/null) ||
            { _pr_unlock; _pr_die 3 "cannot write in $_pr_to (read-only file system or no write permission)"; }
        if ! _pr_unpack "$_pr_env" "$_pr_s"; then
            _pr_rmtree "$_pr_s"; _pr_unlock; _pr_die 3 "could not extract $_pr_env into $_pr_to: $_pr_why"
        fi
        _pr_moveup "$_pr_s/env" "$_pr_to" || { _pr_unlock; _pr_die 3 "could not move the extracted files into $_pr_to"; }
        _pr_rmtree "$_pr_s"
        _pr_mark extract
        if [ -f "$_pr_to/bin/conda-unpack" ]; then
            poncho_relocate "$_pr_to" "$_pr_to" || { _pr_unlock; _pr_die 4 "could not relocate $_pr_to"; }
        else
            printf '%s\n' "$_pr_to" >"$_pr_to/.poncho_ready" || { _pr_unlock; _pr_die 3 "cannot write in $_pr_to"; }
        fi
        rm -f -- "$_pr_to/.poncho_unpacking"
        _pr_log "$_pr_to/.poncho_unpack.log" "$_pr_to"
    elif [ -f "$_pr_to/bin/conda-unpack" ] && ! _pr_ready_for "$_pr_to"; then
        # Not empty and not ours: used as is (upstream), relocated if it is an unrelocated conda-pack tree.
        _pr_unlock
        poncho_relocate "$_pr_to" "$_pr_to" "$_pr_wait" || _pr_die 4 "could not relocate $_pr_to"
    fi
    _pr_unlock
    _pr_exec "$_pr_to" "$@"
fi

# --- the per-worker cache -------------------------------------------------------------------------------
_pr_b=${_pr_env##*/}
_pr_id=
case $_pr_b in
    env-*.tar.gz)
        _pr_id=${_pr_b%.tar.gz}
        case ${_pr_id#env-} in '' | *[!0-9a-f]*) _pr_id= ;; esac ;;
esac
if [ -z "$_pr_id" ]; then
    _pr_st=$(stat -L -c '%s-%Y' -- "$_pr_env") || _pr_die 2 "cannot stat $_pr_env"
    case $_pr_b in
        .* | *[!A-Za-z0-9._+-]*) _pr_b=$(printf '%s' "$_pr_b" | cksum); _pr_b=c${_pr_b%% *} ;;
    esac
    _pr_id=$_pr_b-$_pr_st
fi
_pr_setroot
_pr_d=$_pr_root/$_pr_id
_pr_trustdir "$_pr_d"

# --unpack-to inside the sandbox: make that path a symlink to the cached environment.
_pr_linkto() {
    [ -n "$_pr_link" ] || return 0
    [ -d "${_pr_link%/*}" ] || mkdir -p -- "${_pr_link%/*}" || _pr_die 3 "cannot create the directory of $_pr_link"
    # Tasks sharing the path (Work Queue 8 sets WORK_QUEUE_SANDBOX to the worker's workspace) may race here.
    # A link that leads somewhere is left alone (no fork on the warm path); a dangling one (checked to be ours
    # above) is replaced.
    if [ -L "$_pr_link" ]; then
        [ ! -e "$_pr_link" ] || return 0
        rm -f -- "$_pr_link"
    fi
    ln -s -- "$_pr_d" "$_pr_link" 2>/dev/null || [ -L "$_pr_link" ] || _pr_die 3 "cannot link $_pr_link to $_pr_d"
}

# With PONCHO_ENV_KEEP or PONCHO_ENV_BUDGET_MB, the use lock is taken before the readiness test, so an evictor
# (exclusive, non-blocking) cannot remove the env between test and exec.
if [ -n "$_pr_managed" ] && [ -d "$_pr_root" ]; then _pr_uselock 9 "$_pr_id"; fi
if [ -f "$_pr_d/.poncho_ready" ]; then
    [ -z "$_pr_evict_needed" ] || _pr_evict "$_pr_root"
    _pr_linkto
    _pr_exec "$_pr_d" "$@"
fi

# Cold path.
exec 9>&-
_pr_floorcheck "$_pr_env"
_pr_mkroot
_pr_unpackkept 9 "$_pr_id" "$_pr_d" unpacked _pr_extract "$_pr_env" "$_pr_id"
[ -z "$_pr_evict_needed" ] || _pr_evict "$_pr_root"
_pr_linkto
_pr_exec "$_pr_d" "$@"
