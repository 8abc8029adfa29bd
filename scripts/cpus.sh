#!/usr/bin/env bash
# Prints how many CPUs this process may really use: nproc (affinity), lowered
# to the cgroup CPU quota when one is set (containers often show every core of
# the host but allow only a few).
cpus=$(nproc)
quota=""
if [ -r /sys/fs/cgroup/cpu.max ]; then
  read -r q p < /sys/fs/cgroup/cpu.max || true
  [ "${q:-max}" != "max" ] && quota=$(( (q + p - 1) / p ))
elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ] && [ -r /sys/fs/cgroup/cpu/cpu.cfs_period_us ]; then
  q=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
  p=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
  [ "$q" -gt 0 ] && quota=$(( (q + p - 1) / p ))
fi
if [ -n "$quota" ] && [ "$quota" -lt "$cpus" ]; then cpus=$quota; fi
[ "$cpus" -lt 1 ] && cpus=1
echo "$cpus"
