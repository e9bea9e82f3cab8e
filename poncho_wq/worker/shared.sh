_pr_reloc_py='
@RELOCATE_PY@
'

# Activation.  $1 = absolute env dir.  The sourced files are the environment's code and run in this very shell,
# so they can set any variable: a data variable named IFS in poncho/set_env once made the shim skip the command
# and exit 0.  Hence: the env dir is kept in $1 only (variables can be clobbered, the function's
# positional parameters only by set/shift), IFS is reset afterwards, callers quote everything they use after
# activation, and an EXIT trap turns an `exit` inside a sourced file (which would end this shell before the
# command ran, possibly with status 0) into exit 4 with a message.  exec does not run the trap.
poncho_activate() {
    trap 'printf "%s: %s\n" "${0##*/}" "a file sourced to activate $CONDA_PREFIX (etc/conda/activate.d/*.sh or poncho/set_env) called exit: the command did not run" >&2; exit 4' EXIT
    PATH=$1/bin:$PATH
    CONDA_PREFIX=$1
    CONDA_DEFAULT_ENV=$1
    export PATH CONDA_PREFIX CONDA_DEFAULT_ENV
    unset PYTHONPATH PYTHONHOME
    for _pf in "$1"/etc/conda/activate.d/*.sh; do
        if [ -f "$_pf" ]; then . "$_pf"; fi
    done
    # poncho/set_env exports the data variables as "$1/NAME": $1 is the env dir here.
    if [ -f "$1/poncho/set_env" ]; then . "$1/poncho/set_env"; fi
    unset IFS
    trap - EXIT
}

# Relocate $1 (files) for prefix $2 when it has conda-unpack records; $3 = lock wait (in-place, unlocked
# callers) or empty.  An environment whose records are empty (poncho/norelocate, written by poncho_wq/pack.py) is
# only marked ready for $2, without starting a Python (issue 27): a builtin write, the same text the relocator
# records (two first tasks writing it at once write the same line).
poncho_relocate() {
    if [ -f "$1/poncho/norelocate" ]; then
        { command printf '%s\n' "$2" >"$1/.poncho_ready"; } 2>/dev/null && return 0
        printf '%s\n' "poncho_wq relocate: $1: cannot write $1/.poncho_ready" >&2
        return 1
    fi
    if [ -x "$1/bin/python" ]; then _py=$1/bin/python
    elif command -v python3 >/dev/null 2>&1; then _py=python3
    elif command -v python >/dev/null 2>&1; then _py=python
    else printf '%s\n' "poncho_wq relocate: $1: no bin/python in the environment and none on PATH" >&2; return 1
    fi
    "$_py" -E -s -c "$_pr_reloc_py" "$1" "$2" ${3:+"$3"}
}

# Relocated for this very path?  (fork-free: read is a builtin)
_pr_ready_for() {
    [ -f "$1/.poncho_ready" ] || return 1
    _m=
    IFS= read -r _m <"$1/.poncho_ready" || :
    [ "$_m" = "$1" ]
}

# The floor check (issue 19).  A poncho_wq environment records what it needs of a machine in poncho/floor
# (lines machine=, libc=, glibc=, glibc_by=: poncho_wq/floor.py, from its own ELF files), which is its tarball's
# first member so that the shim reads it before unpacking anything.  An environment copied from a glibc 2.35
# interpreter unpacks completely on a glibc 2.31 worker and then dies in the dynamic loader ("GLIBC_2.32 not
# found", or "libpython3.11.so.1.0: cannot open shared object file" without /proc) with a message naming neither
# the cause nor the fix: this says both, before the work.  The worker's side: uname -m, and the C library from
# getconf GNU_LIBC_VERSION (glibc's own getconf, which musl's lacks), else the glibc loader's --version, else
# ldd --version; musl = its loader /lib/ld-musl-*.so.1 (the interpreter a musl environment's binaries name),
# looked at last because Debian's musl package installs it next to glibc.  What cannot be told (no uname, an
# unknown libc, no floor recorded) passes: the check only refuses what cannot work.  All of it runs only where
# an environment is about to be unpacked or relocated, never on the warm path.  PONCHO_SKIP_FLOOR_CHECK=1 skips it
# (a floor set by a binary the job never loads, say).
_fl_nl='
'
# The worker's C library: _fl_wl = glibc, musl or empty (unknown); _fl_wg = glibc's version or empty.
poncho_worker_libc() {
    _fl_wl=
    _fl_wg=$(getconf GNU_LIBC_VERSION 2>/dev/null) || _fl_wg=
    case $_fl_wg in "glibc "[0-9]*) _fl_wl=glibc; _fl_wg=${_fl_wg#glibc } ;; *) _fl_wg= ;; esac
    if [ -z "$_fl_wl" ]; then
        for _fl_ld in /lib64/ld-linux*.so.* /lib/ld-linux*.so.* /lib/*-linux-*/ld-linux*.so.*; do
            [ -x "$_fl_ld" ] || continue
            _fl_x=$("$_fl_ld" --version 2>/dev/null) || _fl_x=
            _fl_x=${_fl_x%%"$_fl_nl"*}
            case $_fl_x in *"release version "[0-9]*) _fl_wl=glibc; _fl_wg=${_fl_x##*release version }; _fl_wg=${_fl_wg%.}; break ;; esac
        done
    fi
    if [ -z "$_fl_wl" ]; then
        _fl_x=$(ldd --version 2>&1) || :
        _fl_x=${_fl_x%%"$_fl_nl"*}
        case $_fl_x in
            *GLIBC* | *"GNU libc"*) _fl_wl=glibc; _fl_wg=${_fl_x##* } ;;
            *musl*) _fl_wl=musl ;;
        esac
    fi
    if [ -z "$_fl_wl" ]; then
        for _fl_ld in /lib/ld-musl-*.so.1; do
            if [ -e "$_fl_ld" ]; then _fl_wl=musl; fi
            break
        done
    fi
    case $_fl_wg in *[!0-9.]* | .* | *. | *..*) _fl_wg= ;; esac
}

# Is the dotted version $1 at least $2?  Numeric fields, fork-free; both checked to be digits and dots.
_fl_atleast() {
    _fl_a=$1
    _fl_b=$2
    while [ -n "$_fl_a$_fl_b" ]; do
        _fl_p=${_fl_a%%.*}
        _fl_q=${_fl_b%%.*}
        case $_fl_a in *.*) _fl_a=${_fl_a#*.} ;; *) _fl_a= ;; esac
        case $_fl_b in *.*) _fl_b=${_fl_b#*.} ;; *) _fl_b= ;; esac
        [ "${_fl_p:-0}" -eq "${_fl_q:-0}" ] || { [ "${_fl_p:-0}" -gt "${_fl_q:-0}" ]; return; }
    done
}

# $1 = program name (the message's prefix), $2 = the text of a poncho/floor file, $3 = the environment (named in
# the message).  Status 0: it may run here; 1: it cannot, and one line on stderr said what it needs, what this
# worker has and how to build for it.
poncho_floor_ok() {
    [ "${PONCHO_SKIP_FLOOR_CHECK:-}" != 1 ] || return 0
    _fl_m=
    _fl_l=
    _fl_g=
    _fl_by=
    _fl_t=$2
    # poncho_wq writes 5 lines; the file comes from an archive, so only its first 64 lines are looked at (each
    # step copies the rest of the text: 64 KiB of short lines took 7 s under dash, 47 s under bash).
    _fl_n=0
    while [ -n "$_fl_t" ] && [ "$_fl_n" -lt 64 ]; do
        _fl_n=$((_fl_n + 1))
        _fl_x=${_fl_t%%"$_fl_nl"*}
        case $_fl_t in *"$_fl_nl"*) _fl_t=${_fl_t#*"$_fl_nl"} ;; *) _fl_t= ;; esac
        case $_fl_x in
            machine=*) _fl_m=${_fl_x#*=} ;;
            libc=*) _fl_l=${_fl_x#*=} ;;
            glibc=*) _fl_g=${_fl_x#*=} ;;
            glibc_by=*) _fl_by=${_fl_x#*=} ;;
        esac
    done
    # Shown in messages: text from the archive only when it is printable ASCII (an escape sequence there would
    # reach the task's output raw, and the terminal showing it).
    case $_fl_m in *[!\ -~]*) _fl_m='(unprintable)' ;; esac
    case $_fl_by in *[!\ -~]*) _fl_by='(unprintable)' ;; esac
    # Digits and dots, no field over 9 digits ([ -eq ] cannot compare it: an error line, not our one line).
    case $_fl_g in *[!0-9.]* | .* | *. | *..* | *[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]*) _fl_g= ;; esac
    _fl_wm=$(uname -m 2>/dev/null) || _fl_wm=
    # uname -m's names for what floor.py calls i686 and arm (ELF machines 3 and 40).
    case $_fl_wm in i[3456]86) _fl_wm=i686 ;; armv*) _fl_wm=arm ;; esac
    _fl_tg=$_fl_wm
    case $_fl_tg in arm) _fl_tg=armv7l ;; '') _fl_tg=$_fl_m ;; esac
    if [ -n "$_fl_m" ] && [ -n "$_fl_wm" ]; then
        case ,$_fl_m, in
            *,"$_fl_wm",*) ;;
            *)  poncho_worker_libc
                _fl_x=${_fl_wg#*.}
                _fl_x=${_fl_x%%.*}
                printf '%s: %s\n' "$1" "$3 was built for $_fl_m and cannot run on this $_fl_wm worker${_fl_wl:+ ($_fl_wl${_fl_wg:+ $_fl_wg})}: build it for $_fl_wm (the conda engine with poncho_package_create --target manylinux_2_${_fl_x:-17}_$_fl_tg, or a build on a machine of that architecture), or send it to $_fl_m workers" >&2
                return 1 ;;
        esac
    fi
    case $_fl_l in glibc | musl) ;; *) return 0 ;; esac
    poncho_worker_libc
    if [ "$_fl_l" = musl ]; then
        for _fl_ld in /lib/ld-musl-*.so.1; do
            [ -e "$_fl_ld" ] && return 0
            break
        done
        [ -n "$_fl_wl" ] || return 0
        printf '%s: %s\n' "$1" "$3 needs musl libc (its loader /lib/ld-musl-*.so.1), this worker${_fl_wm:+ ($_fl_wm)} has $_fl_wl${_fl_wg:+ $_fl_wg}: build it on a glibc system or with the conda engine, or send it to musl workers" >&2
        return 1
    fi
    case $_fl_wl in
        glibc)
            [ -n "$_fl_g" ] && [ -n "$_fl_wg" ] || return 0
            ! _fl_atleast "$_fl_wg" "$_fl_g" || return 0
            _fl_x=${_fl_wg#*.}
            _fl_x=${_fl_x%%.*}
            printf '%s: %s\n' "$1" "$3 needs glibc $_fl_g or newer${_fl_by:+ ($_fl_by)}, this worker${_fl_wm:+ ($_fl_wm)} has glibc $_fl_wg: build it for this worker's floor (poncho_package_create --target manylinux_2_${_fl_x}_$_fl_tg, the conda engine, or --python an interpreter built on a system with glibc $_fl_wg or older), or set PONCHO_SKIP_FLOOR_CHECK=1 to try anyway" >&2
            return 1 ;;
        musl)
            printf '%s: %s\n' "$1" "$3 needs glibc${_fl_g:+ $_fl_g or newer}, this worker${_fl_wm:+ ($_fl_wm)} has musl libc: build it on a musl system (e.g. an Alpine container), or send it to glibc workers" >&2
            return 1 ;;
    esac
}

# $1 = program name, $2 = an unpacked environment: poncho_floor_ok on its poncho/floor (none: nothing to check).
poncho_floor_dir() {
    [ "${PONCHO_SKIP_FLOOR_CHECK:-}" != 1 ] && [ -f "$2/poncho/floor" ] || return 0
    _fl_t=
    _fl_n=0
    while [ "$_fl_n" -lt 64 ] && { IFS= read -r _fl_x || [ -n "$_fl_x" ]; }; do
        _fl_n=$((_fl_n + 1))
        _fl_t=$_fl_t$_fl_x$_fl_nl
    done <"$2/poncho/floor"
    poncho_floor_ok "$1" "$_fl_t" "$2"
}

