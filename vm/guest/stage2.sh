#!/bin/sh
# zaptrace guest, stage 2: PID 1 after switch_root into the ext4 root.
#
# Read over 9p from the host checkout at every boot (edits need no image
# rebuild).  vm/guest/init has mounted /proc, /sys, /dev, /tmp, tracefs,
# debugfs, bpffs, cgroup2 and the scratch disk (/scratch).
#
# The host's vm/runner.py writes, in the control share:
#   config.sh  ZT_* settings for this script (shell-quoted)
#   cmd.sh     environment + cwd + the command (shell-quoted)
# and reads back:
#   status     the command's exit status (128+N if killed by signal N)
#   error      a one-line reason if the guest could not run the command
#   timing     guest uptime when the command started and ended
# Our own stdout/stderr is the console (ttyS0 -> console.log); the command's
# stdout/stderr go to hvc0/hvc1, which QEMU writes to the caller's streams.

CTL=/run/zaptrace/ctl
P9="trans=virtio,version=9p2000.L,msize=262144"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

poweroff_now() {
    sync
    echo o > /proc/sysrq-trigger
    sleep 60
}

fatal() {
    echo "zaptrace: fatal: $*"
    echo "$*" > "$CTL/error"
    poweroff_now
}

log() {
    read -r up _ < /proc/uptime
    echo "zaptrace-stage2 [$up]: $*"
}

. "$CTL/config.sh" || fatal "cannot read $CTL/config.sh"
hostname zaptrace-guest
log "started"

# The running kernel's modules (for modprobe) and, for a user's kernel, its headers.
MODDIR="/lib/modules/$ZT_KVER"
mkdir -p "$MODDIR"
if [ "$ZT_MODULES" = 1 ]; then
    mkdir -p /run/zaptrace/modules
    mount -t 9p -o "$P9,ro,cache=loose" zt_mod /run/zaptrace/modules || fatal "cannot mount the modules share"
    links=""
    for entry in /run/zaptrace/modules/*; do
        name=${entry##*/}
        case "$name" in build|source) continue ;; esac
        [ -e "$MODDIR/$name" ] || links="$links $entry"
    done
    # Module tree entries never contain blanks: one ln for all of them.
    [ -z "$links" ] || ln -s $links "$MODDIR/" || fatal "cannot link the modules into $MODDIR"
fi
if [ "$ZT_HEADERS" = 1 ]; then
    mkdir -p /run/zaptrace/headers
    mount -t 9p -o "$P9,ro,cache=loose" zt_hdr /run/zaptrace/headers || fatal "cannot mount the headers share"
    rm -f "$MODDIR/build" "$MODDIR/source"
    ln -s /run/zaptrace/headers "$MODDIR/build"
fi
if [ "${ZT_HEADERS_SOURCE:-0}" = 1 ]; then
    # Debian's split headers: the -common tree, found by BCC through "source", and
    # at the absolute path the -amd64 tree's Makefile names.
    mkdir -p /run/zaptrace/headers-source
    mount -t 9p -o "$P9,ro,cache=loose" zt_hsrc /run/zaptrace/headers-source || fatal "cannot mount the headers-source share"
    ln -s /run/zaptrace/headers-source "$MODDIR/source"
fi

if [ "${ZT_SCRATCH_FS:-ext4}" != ext4 ]; then
    # A module of a Debian kernel, or built in (a kernel from vm kernel build has no modules).
    grep -qw "$ZT_SCRATCH_FS" /proc/filesystems || modprobe "$ZT_SCRATCH_FS" \
        || fatal "the kernel has no $ZT_SCRATCH_FS (neither built in nor a module) for the scratch disk"
    mount -t "$ZT_SCRATCH_FS" /dev/vdb /scratch || fatal "cannot mount the $ZT_SCRATCH_FS scratch disk /dev/vdb"
    chmod 1777 /scratch
fi

# `zaptrace` runs the checkout's packages with the guest's python3 and only
# the guest's site-packages.  /opt/zaptrace/lib holds one name, `zaptrace`, as
# an installed zaptrace does: in a checkout, zaptrace/__init__.py maps
# zaptrace.analysis, zaptrace.probes and zaptrace.vm to the top-level folders
# beside it (it follows this symlink to find them); when the share is an
# installed zaptrace (vm/runner.py shares the parent of vm/), it is the package.
mkdir -p /opt/zaptrace
mount -t tmpfs -o mode=755 tmpfs /opt/zaptrace
mkdir /opt/zaptrace/bin /opt/zaptrace/lib
pkg=/run/zaptrace/src/zaptrace
[ -f "$pkg/__init__.py" ] || pkg=/run/zaptrace/src
ln -s "$pkg" /opt/zaptrace/lib/zaptrace || fatal "cannot link $pkg into /opt/zaptrace/lib"
printf '%s\n' '#!/bin/sh' \
    'PYTHONPATH=/opt/zaptrace/lib${PYTHONPATH:+:$PYTHONPATH} exec /usr/bin/python3 -P -m zaptrace "$@"' \
    > /opt/zaptrace/bin/zaptrace
chmod 755 /opt/zaptrace/bin/zaptrace
mount -o remount,ro /opt/zaptrace

# The checkout at its host path (read-only), then the caller's cwd (read-write).
if [ -n "$ZT_CHECKOUT" ]; then
    mkdir -p "$ZT_CHECKOUT" && mount --bind /run/zaptrace/src "$ZT_CHECKOUT" \
        || fatal "cannot bind the checkout at $ZT_CHECKOUT"
fi
mkdir -p "$ZT_CWD" && mount -t 9p -o "$P9" zt_cwd "$ZT_CWD" || fatal "cannot mount the cwd share at $ZT_CWD"

# The command's output goes to the raw virtio consoles hvc0/hvc1 (the virtconsole
# ports named zaptrace.stdout and zaptrace.stderr, in that order), through a
# pipe unless the host side is a terminal, so that the command sees what it
# would see on the host.  hvc resets its termios whenever the last file is
# closed: fds 3 and 4 keep both open (and raw) until we power off.
exec 3> /dev/hvc0 4> /dev/hvc1 || fatal "cannot open hvc0/hvc1"
stty -F /dev/hvc0 raw -echo && stty -F /dev/hvc1 raw -echo || fatal "cannot set up hvc0/hvc1"
OUT=/dev/hvc0
ERR=/dev/hvc1
PUMPS=""
if [ "$ZT_STDOUT_TTY" != 1 ]; then
    OUT=/run/zaptrace/stdout
    mkfifo "$OUT" || fatal "cannot create $OUT"
    cat "$OUT" >&3 4>&- &
    PUMPS="$PUMPS $!"
fi
if [ "$ZT_STDERR_TTY" != 1 ]; then
    ERR=/run/zaptrace/stderr
    mkfifo "$ERR" || fatal "cannot create $ERR"
    cat "$ERR" >&4 3>&- &
    PUMPS="$PUMPS $!"
fi

log "running the command"
: > "$CTL/started"
read -r t0 _ < /proc/uptime
env -i /bin/sh "$CTL/cmd.sh" < /dev/null > "$OUT" 2> "$ERR" 3>&- 4>&-
rc=$?
read -r t1 _ < /proc/uptime
log "command exited with status $rc"

# Let the pumps drain; if a leftover background process holds a pipe open,
# the watchdog ends them after five seconds.
if [ -n "$PUMPS" ]; then
    (sleep 5; kill $PUMPS 2>/dev/null) &
    watchdog=$!
    wait $PUMPS
    kill "$watchdog" 2>/dev/null
fi

sync
echo "cmd_start=$t0 cmd_end=$t1" > "$CTL/timing"
echo "$rc" > "$CTL/status"
poweroff_now
