# Sourced by the benchmark scripts that start a node and the hello-world
# ceiling as children: a scratch directory ($work), removed on exit with
# every child `start` began killed.

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Start `$@` as a child named $1 (its stdout goes to $work/$1.out); sets
# $url to the address it prints ("edge-session listening on URL", as the
# node and `edge-session-bench serve-hello` both do). Not in a command
# substitution: the child must belong to this shell.
start() {
    local name=$1
    shift
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    for _ in $(seq 600); do
        url=$(sed -n 's/^edge-session listening on \(http:[^ ]*\)$/\1/p' "$work/$name.out")
        [ -n "$url" ] && return
        sleep 0.1
    done
    echo "$(basename "$0"): $name did not start:" >&2
    cat "$work/$name.err" >&2
    exit 1
}
