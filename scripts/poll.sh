# Sourced by scripts that wait for something; not run.

# poll DEADLINE_SECS COMMAND...: true as soon as COMMAND succeeds, false at
# the deadline (checked every 0.05 s).
poll() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}
