#!/usr/bin/env bash
# Builds an N-host test cluster from Linux network namespaces on this machine and runs a
# zapfleet scenario on it: a coordinator host and N worker hosts, each a namespace with its own
# network stack, joined by a bridge that lives in a namespace of its own. Every process runs
# inside the namespaces and every address (10.77.0.0/24) exists only there, so no packet can
# leave them. Everything is removed on exit. The fleet talks CurveZMQ: the script makes a key
# pair for the coordinator and each worker (in OUT/keys) and allows exactly those workers.
#
# Where namespaces cannot be made (not root, no iproute2, a sandbox that forbids them), the same
# run happens on loopback with one port per run, and the output says so.
#
# Usage: deploy/netns/run-cluster.sh [options]
#   --workers N        worker hosts (default 3)
#   --scenario S       built-in name or YAML file (default max-guest-memory)
#   --slots K          the most memslots per shard each worker takes (default 4)
#   --kill-one         SIGKILL worker 1 once it has a shard: the run must requeue it and finish
#   --stop-one         SIGSTOP worker 1 once it has a shard, SIGCONT it after another worker has
#                      finished that shard: its late result must be dropped as a duplicate
#   --partition-one    take worker 1's link down once it has a shard, up again after another
#                      worker has finished that shard (namespaces only): the same, and worker 1
#                      must reconnect and take new work
#   --freeze-all       SIGSTOP the coordinator and every worker at once for 3 s (twice the
#                      silence limit) once worker 1 has a shard, then SIGCONT them: a stall of
#                      the whole machine, which is no one's silence: nothing may be requeued
#   --stop-coordinator SIGSTOP the coordinator alone for 3 s once worker 1 has a shard, then
#                      SIGCONT it: the workers find it silent and reconnect; nothing may be lost
#   --out DIR          where the coordinator writes report.json and the rest (default: a temp dir)
#   --binary PATH      the zapfleet binary (default: .build/release/zapfleet, built if missing)
#   --loopback         skip namespaces even where they work
# Exit status: the coordinator's (0: every objective met), or 1 if the cluster could not run.
set -euo pipefail

workers=3
scenario=max-guest-memory
slots=4
kill_one=0
stop_one=0
partition_one=0
freeze_all=0
stop_coordinator=0
out=""
binary=""
force_loopback=0
while [ $# -gt 0 ]; do
    case "$1" in
        --workers) workers=$2; shift 2 ;;
        --scenario) scenario=$2; shift 2 ;;
        --slots) slots=$2; shift 2 ;;
        --kill-one) kill_one=1; shift ;;
        --stop-one) stop_one=1; shift ;;
        --partition-one) partition_one=1; shift ;;
        --freeze-all) freeze_all=1; shift ;;
        --stop-coordinator) stop_coordinator=1; shift ;;
        --out) out=$2; shift 2 ;;
        --binary) binary=$2; shift 2 ;;
        --loopback) force_loopback=1; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "run-cluster: unknown option $1 (see --help)" >&2; exit 1 ;;
    esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "$binary" ]; then
    binary="$root/.build/release/zapfleet"
    [ -x "$binary" ] || (cd "$root" && swift build -c release --product zapfleet >&2)
fi
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
[ -n "$out" ] || out=$(mktemp -d /tmp/zapfleet-cluster.XXXXXX)
mkdir -p "$out"
logs="$out/logs"
mkdir -p "$logs"

id=$(printf '%04x' $((RANDOM % 65536)))
prefix="zf$id"
namespaces=()
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT

use_netns=0
reason=""
if [ "$force_loopback" = 1 ]; then
    reason="--loopback given"
elif [ "$(id -u)" != 0 ]; then
    reason="not root"
elif ! command -v ip >/dev/null 2>&1; then
    reason="iproute2 (ip) is not installed"
elif ! ip netns add "$prefix-probe" 2>/dev/null; then
    reason="ip netns add is not permitted here"
else
    ip netns delete "$prefix-probe"
    use_netns=1
fi

# run_on HOST COMMAND...: becomes COMMAND on HOST (inside its namespace, or here on loopback).
# Called in the background, it execs, so that $! is the command's own pid.
run_on() {
    local host=$1; shift
    if [ "$use_netns" = 1 ]; then
        exec ip netns exec "$prefix-$host" "$@"
    else
        exec "$@"
    fi
}

if [ "$use_netns" = 1 ]; then
    echo "hosts: network namespaces ($prefix-*), bridge 10.77.0.0/24, 1 coordinator + $workers workers"
    bridge="$prefix-br"
    ip netns add "$bridge"; namespaces+=("$bridge")
    ip -n "$bridge" link add br0 type bridge
    ip -n "$bridge" link set br0 up
    hosts=(coord)
    for k in $(seq 1 "$workers"); do hosts+=("w$k"); done
    n=1
    for host in "${hosts[@]}"; do
        ns="$prefix-$host"
        ip netns add "$ns"; namespaces+=("$ns")
        ip link add "v$id$host" type veth peer name "b$id$host"
        ip link set "v$id$host" netns "$ns"
        ip link set "b$id$host" netns "$bridge"
        ip -n "$ns" link set "v$id$host" name eth0
        ip -n "$ns" addr add "10.77.0.$n/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
        ip -n "$bridge" link set "b$id$host" master br0
        ip -n "$bridge" link set "b$id$host" up
        n=$((n + 1))
    done
    endpoint="tcp://10.77.0.1:5555"
    bind="tcp://10.77.0.1:5555"
else
    port=$((20000 + RANDOM % 20000))
    echo "hosts: loopback, not network namespaces ($reason); coordinator on 127.0.0.1:$port"
    endpoint="tcp://127.0.0.1:$port"
    bind="$endpoint"
fi

keys="$out/keys"
mkdir -p "$keys/workers"
"$binary" keygen coordinator --dir "$keys" --force > /dev/null
for k in $(seq 1 "$workers"); do
    "$binary" keygen "w$k" --dir "$keys" --force > /dev/null
    cp "$keys/w$k.pub" "$keys/workers/"
done

run_on coord "$binary" coordinator --scenario "$scenario" --bind "$bind" --expect-workers "$workers" \
    --key "$keys/coordinator.key" --allow-keys "$keys/workers" \
    --wait 60s --heartbeat-interval 500ms --out "$out" --events "$logs/coordinator.events" \
    > "$logs/coordinator.out" 2> "$logs/coordinator.err" &
coordinator=$!
pids+=("$coordinator")
worker_pids=()
for k in $(seq 1 "$workers"); do
    run_on "w$k" "$binary" worker --connect "$endpoint" --name "w$k" --slots "$slots" --memory 4GiB \
        --key "$keys/w$k.key" --coordinator-key "$keys/coordinator.pub" --events "$logs/w$k.events" \
        > "$logs/w$k.out" 2> "$logs/w$k.err" &
    worker_pids+=($!)
    pids+=($!)
done

# wait_for PATTERN: until the coordinator's events (--events, one JSON object per line) have a
# line matching PATTERN (at most 60 s); prints that line.
wait_for() {
    for _ in $(seq 1 600); do
        if line=$(grep -m1 -E -- "$1" "$logs/coordinator.events" 2>/dev/null); then echo "$line"; return 0; fi
        sleep 0.1
    done
    echo "run-cluster: gave up waiting for '$1' in the coordinator's events" >&2
    return 1
}

if [ "$kill_one" = 1 ]; then
    # Wait until worker 1 has a shard, then kill it without warning.
    wait_for '"event":"shard_assigned",.*"worker":"w1"' > /dev/null
    sleep 0.3
    kill -9 "${worker_pids[0]}"
    echo "killed worker w1 (pid ${worker_pids[0]}) with SIGKILL mid-shard"
fi

if [ "$freeze_all" = 1 ]; then
    wait_for '"event":"shard_assigned",.*"worker":"w1"' > /dev/null
    sleep 0.1
    kill -STOP "$coordinator" "${worker_pids[@]}"
    echo "froze the coordinator and every worker with SIGSTOP"
    sleep 3
    kill -CONT "$coordinator" "${worker_pids[@]}"
    echo "continued them all with SIGCONT after 3 s"
fi

if [ "$stop_coordinator" = 1 ]; then
    wait_for '"event":"shard_assigned",.*"worker":"w1"' > /dev/null
    sleep 0.1
    kill -STOP "$coordinator"
    echo "stopped the coordinator with SIGSTOP"
    sleep 3
    kill -CONT "$coordinator"
    echo "continued the coordinator with SIGCONT after 3 s"
fi

if [ "$stop_one" = 1 ] || [ "$partition_one" = 1 ]; then
    if [ "$partition_one" = 1 ] && [ "$use_netns" != 1 ]; then
        echo "run-cluster: --partition-one needs network namespaces ($reason)" >&2
        exit 1
    fi
    # The first shard worker 1 takes, then the moment another worker has finished it.
    shard=$(wait_for '"event":"shard_assigned",.*"worker":"w1"' | sed -E 's/.*"shard":([0-9]+),.*/\1/')
    sleep 0.1
    if [ "$stop_one" = 1 ]; then
        kill -STOP "${worker_pids[0]}"
        echo "stopped worker w1 (pid ${worker_pids[0]}) with SIGSTOP during shard $shard"
    else
        ip -n "$prefix-w1" link set eth0 down
        echo "partitioned worker w1: its link is down during shard $shard"
    fi
    wait_for "\"event\":\"shard_done\",.*\"shard\":$shard," > /dev/null
    if [ "$stop_one" = 1 ]; then
        kill -CONT "${worker_pids[0]}"
        echo "continued worker w1 with SIGCONT after shard $shard was done elsewhere"
    else
        ip -n "$prefix-w1" link set eth0 up
        echo "healed worker w1's link after shard $shard was done elsewhere"
    fi
fi

status=0
wait "$coordinator" || status=$?
for pid in "${worker_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
cat "$logs/coordinator.out"
echo "coordinator exit status: $status; report: $out/report.json; logs: $logs"
exit "$status"
