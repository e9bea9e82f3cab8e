#!/bin/sh
# run_in_env: activate the environment this file lives in (<env>/bin/run_in_env) and exec the command.
#
#   <env>/bin/run_in_env command [args ...]     # run inside the environment
#   <env>/bin/run_in_env                        # prepare (relocate) it in place, exit 0; as TaskVine's
#                                               # mini task (output/bin/run_in_env): nothing to do, exit 0
#
# Every poncho_wq tarball carries it as bin/run_in_env: TaskVine's declare_poncho unpacks the tarball as
# `output`, calls `output/bin/run_in_env` once with no argument, then MOVES `output` into the worker cache, and
# each task runs `__vine_env_<id>/bin/run_in_env <cmd>` through a symlink in its sandbox.  Relocation rewrites
# the environment's own path into its files, so it is worth doing only where the environment stays: TaskVine's
# call with no argument does nothing (it used to relocate for the sandbox, and the first task then relocated
# again after the move: twice per worker, issue 14).  It is told by its $0, which vine_file.c spells
# `output/bin/run_in_env` (CCTools 7.17.1): any other call with no argument prepares the environment in place,
# as upstream's run_in_env (poncho_package_run -e DIR) does, for whoever then runs its bin/python or its
# scripts directly; should TaskVine ever spell it otherwise, the cost is the old second relocation, not a
# broken environment.  A call with a command relocates for the physical directory
# the file is in, once (under flock on that directory, inside the Python relocator: concurrent first tasks
# wait, then find it done), recording the prefix in .poncho_ready, so a warm call costs one read and an
# environment moved again is relocated from that prefix to the new one.  The relocator appends one line per
# relocation to .poncho_relocations ("<epoch> <pid> <from> <to>": what tests count).  The floor check (below)
# runs there too, in the task, so that its line reaches the task's output (task.shim_error): a failing mini task
# would only leave TaskVine's own "error creating file via mini task" in the worker's log.
#
# The activation and relocation code below is poncho_package_run's too: both are generated from
# poncho_wq/worker/shared.sh, because the tarball may hold no poncho_package_run and the shim must not need this file.
# Before relocating, it checks the environment's floor (poncho/floor, see poncho_floor_ok): on a worker of another
# architecture or with an older glibc it exits 4 with one line saying what the environment needs, what the
# worker has and how to build for it (PONCHO_SKIP_FLOOR_CHECK=1 skips the check).
# Exit status: 4 if the worker is below the floor, relocation fails, the lock wait (PONCHO_WAIT_FOR_LOCK,
# default 300 s) times out or a file sourced by the activation calls exit; otherwise the command's (127: not
# found).  What the activation files set (a data variable named IFS, say) cannot make it skip the command.

@SHARED@

if [ "$#" -eq 0 ] && [ "$0" = output/bin/run_in_env ]; then exit 0; fi
_ri_here=$PWD
case $0 in */*) _ri_bin=${0%/*} ;; *) _ri_bin=. ;; esac
cd -P -- "$_ri_bin/.." || { printf '%s\n' "run_in_env: cannot find the environment of $0" >&2; exit 4; }
_ri_d=$PWD
cd -- "$_ri_here" || exit 4
if [ -f "$_ri_d/bin/conda-unpack" ] && ! _pr_ready_for "$_ri_d"; then
    # Before relocation, whose first step runs the environment's own python (floor check: see the shared block).
    poncho_floor_dir run_in_env "$_ri_d" || exit 4
    if [ -w "$_ri_d" ]; then
        # Checked here: the relocator's int() would end in a Python traceback.
        case ${PONCHO_WAIT_FOR_LOCK:-300} in *[!0-9]*)
            printf '%s\n' "run_in_env: PONCHO_WAIT_FOR_LOCK must be a whole number of seconds, not '$PONCHO_WAIT_FOR_LOCK'" >&2
            exit 4 ;;
        esac
        poncho_relocate "$_ri_d" "$_ri_d" "${PONCHO_WAIT_FOR_LOCK:-300}" ||
            { printf '%s\n' "run_in_env: could not relocate $_ri_d" >&2; exit 4; }
    fi
fi
[ "$#" -gt 0 ] || exit 0
poncho_activate "$_ri_d"
# Quoted: activation may have set IFS (see poncho_activate); nothing after it uses a variable of ours.
case $1 in
    */*) ;;
    *) command -v -- "$1" >/dev/null 2>&1 || { printf '%s\n' "run_in_env: command not found: $1" >&2; exit 127; } ;;
esac
exec "$@"
