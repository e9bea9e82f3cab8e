#!/bin/sh
# fetch.sh: the worker-side fetch of a published file (an environment or code layer tarball), checked by size and
# sha256 before anything uses it.  POSIX sh (dash, bash, busybox ash).  Not run as a script: it is cut into the
# sections below ("#@ name" lines) by poncho_wq.worker.fetch_section, each section's lines joined WITHOUT a
# separator (so every line ends where sh allows a newline, after a ";") and whole comment lines dropped; that
# one-line text is what Work Queue's fetch command (poncho_wq.deliver.fetch), TaskVine's fetch mini task and the
# run shim's --fetch (poncho_package_run, generated with it) run; "vine-stub" ends TaskVine's fetch mini task only.
# `sh -n fetch.sh` checks the whole file.
#
# It runs in Work Queue's fetch command (synchronously, in the worker's own process tree, its output not shown
# anywhere useful), in TaskVine's fetch mini task, and in the shim (in a subshell, under the environment's lock).
#  - The downloader is curl, else wget (GNU: one try, its read timeout), else busybox wget; for a file:// URL, cat.
#    Without curl the whole transfer is bounded with timeout(1) when the worker has it.
#  - The bytes are hashed while they arrive (tee into the file and into the hash tool: sha256sum, shasum -a 256,
#    openssl dgst, busybox sha256sum) and counted; the file is kept only when both size and sha256 are the
#    published ones.  No hash tool on the worker is a failure (exit 4), never an unchecked environment.
#  - On any failure the destination $p receives a *note* instead of a tarball: the mark (poncho-fetch-failed,
#    poncho_wq.deliver.fetch.NOTE_MARK), the exit code for the task (2: the downloader failed with an HTTP error,
#    3: the transfer failed or the bytes are not the published ones, 4: a tool is missing) and a one-line message
#    naming the file and the URL (masked).  The fetch itself succeeds: a failing fetch command makes Debian's
#    CCTools drop the worker and requeue the task for ever, and TaskVine 7.17.1 leave it pending for ever.  The
#    task's wrapper (or TaskVine's stub, or the shim) turns the note into the exit code and a one-line message.
# Kept short: Work Queue sends the fetch command url-encoded (blanks, quotes, braces and pipes cost 3 bytes each)
# on one 4096-byte protocol line, beside the URL.  Names (set by the caller): u URL, d URL as shown, N remote
# name, s size, h sha256, T seconds in all, l local path (file://), t temp file, c kept file, p destination of a
# note.  Here: v: is a command there; n: write the note; g: the download to stdout; H hash tool, G a downloader.
# @STALL@ is replaced by the seconds a transfer under 1 KB/s may last (poncho_wq.deliver.fetch.STALL_SECONDS).

#@ shown
# The URL as messages show it when it carries secrets: without its query, and a user:password@ masked.  (No
# "%%" anywhere: Work Queue replaces every one by the cache path, hence the two-step prefix cuts.)
q=${u#*\?};d=${u%"?$q"};[ "$d" = "$u" ]||d="$d?...";
case $d in *//*@*)q=${d#*//};d=${d%"$q"}***@${d#*@};;esac;

#@ tools
v(){ command -v $1 >/dev/null;};
n(){ printf 'poncho-fetch-failed\n%s\ncould not fetch %s from %s: %s\n' $1 $N "$d" "$2" >"$p";};
H=;G=;k=;v timeout&&k="timeout $T";
if v sha256sum;then H=sha256sum;elif v shasum;then H='shasum -a 256';elif v openssl;then H='openssl dgst -sha256 -r';
elif busybox sha256sum </dev/null >/dev/null 2>&1;then H='busybox sha256sum';fi;

#@ http
if v curl;then G=1;g(){ curl -fsSL --speed-limit 1024 --speed-time @STALL@ --max-time $T --max-filesize $((s+1048576)) "$u";};
elif v wget;then G=1;W=wget;wget -V >/dev/null 2>&1&&W='wget -t 1 -T @STALL@';g(){ $k $W -q -O - "$u";};
elif busybox wget --help >/dev/null 2>&1;then G=1;g(){ $k busybox wget -q -O - "$u";};fi;

#@ file
G=1;g(){ $k cat -- "$l";};

#@ check
if [ -z "$H" ];then n 4 'no sha256sum, shasum, openssl or busybox here to check it';
elif [ -z $G ];then n 4 'no curl, wget or busybox wget here to download it';
else { g 2>$t.e||echo $? >$t.x;}|tee $t|$H >$t.h;read -r a b <$t.h;z=$(($(wc -c <$t)));
if [ $z = $s ]&&[ "$a" = $h ];then mv -f $t "$c";
elif [ -f $t.x ];then read -r x <$t.x;e=3;case $x in 22|8)e=2;;28|124)set -- "at most $T s";;63)set -- "over the $s bytes published";;esac;
n $e "${1:+$1: }$(tail -c 200 $t.e|tr -c ' -~' ' ') (exit $x, $z of $s bytes, not kept)";
elif [ $z != $s ];then n 3 "$z bytes, not the $s published (cut short?), not kept";
else n 3 "sha256 $a, not the published $h, not kept";fi;fi;rm -f $t $t.e $t.x $t.h;

#@ wq-link
# Work Queue: the checked file (kept beside its cache) linked, else copied, to the task's input %%.
if [ -f "$c" ];then ln -f "$c" "$p" 2>/dev/null||cp "$c" "$p";fi;[ -s "$p" ]

#@ vine-stub
# TaskVine: the end of the fetch mini task (poncho_wq.taskvine.fetch_task_command).  Why a failed fetch still
# "succeeds" there: in TaskVine 7.17.1 a mini task (or URL) input that fails to materialize only invalidates the
# replica (cache-invalid): the task waiting for it is neither failed nor returned, and the workflow hangs (measured:
# a 404 kept a task pending for good).  So when the fetch wrote a note instead of the checked tarball, the
# "tarball" $p becomes a stub environment whose bin/run_in_env prepares nothing (the unpack mini task succeeds) and
# makes every command exit with the note's code and its one `run_in_env:` line naming the URL, which
# PonchoVineTask.shim_error reports.  Bytes that failed the check are never unpacked.  The stub stays in that
# worker's cache for the workflow, like any environment (TaskVine gives no way to fail only the tasks at hand):
# fix the server and start a new manager, or see docs/security.md (Manager).
{ read -r l;read -r e;read -r m;} 2>/dev/null <"$p";if [ "$l" = poncho-fetch-failed ];then rm -rf stub;
mkdir -p stub/bin stub/poncho&&printf '%s\n' "$e" >stub/poncho/fetch-code&&printf '%s\n' "$m" >stub/poncho/fetch-error&&
printf '%s\n' '#!/bin/sh' '[ "$#" -gt 0 ]||exit 0' 'd=${0%/*}/../poncho' 'printf "run_in_env: %s\n" "$(cat "$d/fetch-error")" >&2' 'exit "$(cat "$d/fetch-code")"' >stub/bin/run_in_env&&
chmod 755 stub/bin/run_in_env&&rm -f "$p"&&tar -czf "$p" -C stub .;fi
