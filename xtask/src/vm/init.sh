#!/bin/busybox sh
# /init of the kernel-matrix initramfs (cargo xtask vm-test): mounts what tracer needs, runs
# `tracer doctor`, then `tracer live --json` around a workload of every event kind and an OOM
# kill, and writes the results to the second serial port before powering off.
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmp /tmp
ip link set lo up
R=/dev/ttyS1
step() { echo "vm-test: $*" > /dev/console; }
step "mounted; tracer doctor"
uname -r > /tmp/kernel
tracer doctor > /tmp/doctor 2>&1
echo "exit $?" >> /tmp/doctor
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/matrix /sys/fs/cgroup/oom
echo 134217728 > /sys/fs/cgroup/matrix/memory.max
echo @OOM_LIMIT@ > /sys/fs/cgroup/oom/memory.max
echo 0 > /sys/fs/cgroup/oom/memory.swap.max 2>/dev/null
step "tracer live"
tracer live --json > /tmp/live 2> /tmp/live.err &
T=$!
i=0
while ! grep -q 'tracing' /tmp/live.err && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
step "workload"
# Every event kind, in a cgroup with a limit (it maps and grows its heap).
sh -c 'echo $$ > /sys/fs/cgroup/matrix/cgroup.procs && exec workload kernel-matrix' >> /tmp/workload 2>&1
# The truth for memory figures: 48 MiB touched by a new process, its VmRSS said at the end.
sh -c 'echo $$ > /sys/fs/cgroup/matrix/cgroup.procs && exec workload hog --mib 48' < /dev/null >> /tmp/workload 2>&1
# An OOM kill of a process that joins its memory cgroup itself, after fork and exec.
workload join-hog --cgroup /sys/fs/cgroup/oom --mib-per-s 64 >> /tmp/workload 2>&1
echo "{\"event\": \"oom-exit\", \"status\": $?}" >> /tmp/workload
# Findings are raised on the once-a-second tick: give it two.
sleep 2
step "stopping tracer"
kill -INT $T
wait $T
echo "exit $?" >> /tmp/live.err
step "writing results"
for f in kernel doctor workload live live.err; do
  echo "=== $f" > $R
  cat /tmp/$f > $R
done
echo "=== end" > $R
sync
poweroff -f
