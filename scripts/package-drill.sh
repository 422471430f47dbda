#!/usr/bin/env bash
# Package drill: the .deb on a throwaway Debian machine, as docs/DEPLOY.md
# tells an operator to use it, checked step by step (docs/DRILLS.md).
#
#   sudo scripts/package-drill.sh            # release build, then the drill
#   sudo STEERHOOK_BIN=target/release/steerhook scripts/package-drill.sh
#
# 1. scripts/package.sh makes steerhook_<v>-1 and, from the same binary,
#    steerhook_<v>-2 (the upgrade).
# 2. debootstrap makes a minimal Debian root (SUITE, default bookworm, from
#    MIRROR, default http://deb.debian.org/debian) with systemd, and
#    systemd-nspawn boots it with its own network namespace (loopback only:
#    its 127.0.0.1:8787 is not the host's). The .debs debootstrap fetched are
#    kept in DEBS_CACHE (default /var/cache/steerhook-drill) for the next run.
# 3. Inside, with systemd as PID 1: `apt install ./steerhook_*.deb`; the
#    user, directories and modes; the service neither enabled nor started;
#    the webhook secret; `steerhook check-config`; `systemctl enable --now`;
#    `doctor`, `send-test` and `events list` as DEPLOY's steerhookctl runs
#    them; an edited config kept across the upgrade to -2, the daemon
#    restarted onto it with the event still there; remove (config, secrets
#    and database stay); purge (config and secrets go, database and user stay).
#
# Needs root, debootstrap, systemd-nspawn (apt-get install debootstrap
# systemd-container), dpkg-deb, and what scripts/package.sh needs.
# Prints every command run inside with its output, PASS:/FAIL: lines, and
# exits non-zero when a check failed. Stops only the container it booted.
set -euo pipefail

DRILL=package
# shellcheck source=scripts/drill-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/drill-lib.sh"

SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
DEBS_CACHE=${DEBS_CACHE:-/var/cache/steerhook-drill}
SECRET=whsec_package_drill_0123456789
CT_PID=""
NSPAWN_PID=""

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and systemd-nspawn need it)"
for tool in debootstrap systemd-nspawn nsenter dpkg-deb; do
    command -v "$tool" >/dev/null || die "$tool is required (apt-get install debootstrap systemd-container)"
done

make_tmp
# The container first (by the PIDs this script started), then drill-lib's cleanup.
stop_container() {
    if [ -n "$CT_PID" ] && kill -0 "$CT_PID" 2>/dev/null; then
        nsenter -t "$CT_PID" -m -u -i -n -p -- /bin/systemctl poweroff >/dev/null 2>&1 || true
    fi
    if [ -n "$NSPAWN_PID" ]; then
        local i
        for i in $(seq 1 300); do
            kill -0 "$NSPAWN_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$NSPAWN_PID" 2>/dev/null; then
            kill -KILL "$NSPAWN_PID" 2>/dev/null || true
        fi
        wait "$NSPAWN_PID" 2>/dev/null || true
        NSPAWN_PID=""
    fi
}
trap 'stop_container; cleanup' EXIT

# --- 1. The packages ---------------------------------------------------------
if [ -z "${STEERHOOK_BIN:-}" ]; then
    note "building the release binary (cargo build --release --locked)"
    (cd "$ROOT" && cargo build --release --locked --quiet --bin steerhook) || die "cargo build failed"
    STEERHOOK_BIN=$TARGET_DIR/release/steerhook
fi
STEERHOOK_BIN=$(realpath "$STEERHOOK_BIN")
mkdir -p "$TMP/debs"
for rev in 1 2; do
    # Our own target dir: package.sh copies the binary there.
    CARGO_TARGET_DIR=$TMP/target STEERHOOK_BIN=$STEERHOOK_BIN \
        "$ROOT/scripts/package.sh" --quiet --deb-revision "$rev" --output "$TMP/debs/" >"$TMP/package-$rev.log" 2>&1 \
        || { cat "$TMP/package-$rev.log"; die "scripts/package.sh failed"; }
done
DEB1=$(ls "$TMP"/debs/steerhook_*-1_*.deb)
DEB2=$(ls "$TMP"/debs/steerhook_*-2_*.deb)
note "packages: $(basename "$DEB1") $(basename "$DEB2")"

# --- 2. A throwaway Debian machine ------------------------------------------
ROOTFS=$TMP/root
mkdir -p "$DEBS_CACHE"
note "debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus $SUITE ($MIRROR)"
started=$SECONDS
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus --cache-dir="$DEBS_CACHE" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$TMP/debootstrap.log" 2>&1 \
    || { tail -n 20 "$TMP/debootstrap.log"; die "debootstrap failed (is $MIRROR reachable? set MIRROR)"; }
note "root ready in $((SECONDS - started)) s: $(du -sh "$ROOTFS" | cut -f1)"
echo "steerhook-drill" >"$ROOTFS/etc/hostname"
cp "$DEB1" "$DEB2" "$ROOTFS/root/"

# --keep-unit --register=no: no machined or host systemd needed (the host
# need not run systemd); --private-network: only a loopback inside.
systemd-nspawn -D "$ROOTFS" --register=no --keep-unit --private-network -b \
    --console=pipe -q </dev/null >"$TMP/boot.log" 2>&1 &
NSPAWN_PID=$!
find_init() {
    CT_PID=$(pgrep -P "$NSPAWN_PID" | head -n 1 || true)
    [ -n "$CT_PID" ]
}
poll 30 find_init || die "systemd-nspawn started no container: $(cat "$TMP/boot.log")"

# A command inside the container, with a clean environment, as root.
ct() {
    nsenter -t "$CT_PID" -m -u -i -n -p -- /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb HOME=/root \
        DEBIAN_FRONTEND=noninteractive "$@"
}
booted() {
    local state
    state=$(ct systemctl is-system-running 2>/dev/null || true)
    [ "$state" = running ] || [ "$state" = degraded ]
}
poll 60 booted || die "the container did not finish booting: $(ct systemctl is-system-running 2>&1 || true)"
note "booted: $(ct sh -c '. /etc/os-release; echo "$PRETTY_NAME"'), $(ct systemctl --version | head -n 1)"

# `run CMD...`: shows the command as a root prompt, then its output.
run() {
    echo "root@steerhook-drill:~# $*"
    local rc=0
    ct sh -c "cd /root && $*" 2>&1 | sed 's/^/    /' || rc=$?
    return $rc
}
# `check WHAT CMD...`: PASS when CMD (run inside) succeeds.
check() {
    local what=$1; shift
    if ct sh -c "$*" >/dev/null 2>&1; then pass "$what"; else fail "$what ($*)"; fi
}
# `mode_is PATH "MODE OWNER:GROUP"`
mode_is() {
    local got
    got=$(ct stat -c '%a %U:%G' "$1" 2>&1 || true)
    if [ "$got" = "$2" ]; then pass "$1 is $2"; else fail "$1 is '$got', expected '$2'"; fi
}

# --- 3. The operator's steps -------------------------------------------------
echo
note "--- install"
run "apt-get install -y ./$(basename "$DEB1")" | grep -v -e 'Reading database' -e 'Reading package lists' -e 'Building dependency tree' -e 'Reading state information' || true
check "dpkg says steerhook is installed" "dpkg-query -W -f='\${Status}' steerhook | grep -qx 'install ok installed'"
run "getent passwd steerhook; getent group steerhook"
check "steerhook is a system user with its home in the state directory and no login shell" \
    "getent passwd steerhook | awk -F: '\$3 < 1000 && \$6 == \"/var/lib/steerhook\" && \$7 ~ /nologin\$/ {ok=1} END {exit !ok}'"
run "stat -c '%a %U:%G %n' /usr/bin/steerhook /etc/steerhook /etc/steerhook/steerhook.toml /etc/steerhook/credentials /etc/steerhook/credentials/* /var/lib/steerhook"
mode_is /usr/bin/steerhook "755 root:root"
mode_is /etc/steerhook "755 root:root"
mode_is /etc/steerhook/steerhook.toml "640 root:steerhook"
mode_is /etc/steerhook/credentials "700 root:root"
for f in webhook_secrets opensteer_api_key smtp_password; do
    mode_is "/etc/steerhook/credentials/$f" "600 root:root"
done
mode_is /var/lib/steerhook "700 steerhook:steerhook"
run "systemctl is-enabled steerhook; systemctl is-active steerhook" || true
check "the service is installed but neither enabled nor started" \
    "[ \"\$(systemctl is-enabled steerhook)\" = disabled ] && ! systemctl is-active --quiet steerhook"
run "dpkg-query -W -f='\${Conffiles}\n' steerhook"
check "the config is a conffile" "dpkg-query -W -f='\${Conffiles}' steerhook | grep -q '/etc/steerhook/steerhook.toml'"
run "dpkg -L steerhook | grep -e bin/ -e '\\.service' -e man1/steerhook.1 -e completions/ -e share/steerhook/"

echo
note "--- configure and start"
run "CREDENTIALS_DIRECTORY=/etc/steerhook/credentials steerhook check-config" && fail "check-config passed without a secret" \
    || pass "check-config refuses the empty secret placeholder"
ct sh -c "printf '%s\n' '$SECRET' >/etc/steerhook/credentials/webhook_secrets"
echo "root@steerhook-drill:~# sudoedit /etc/steerhook/credentials/webhook_secrets   # (the drill writes whsec_package_drill_…)"
if run "CREDENTIALS_DIRECTORY=/etc/steerhook/credentials steerhook check-config"; then
    pass "check-config accepts the installed config once the secret is in place"
else
    fail "check-config on the installed config"
fi
run "systemctl enable --now steerhook" || true
active() { ct systemctl is-active --quiet steerhook; }
if poll 30 active; then pass "systemctl enable --now steerhook: active"; else fail "the service did not become active"; fi
run "systemctl status steerhook --no-pager --lines=5" || true
# DEPLOY's steerhookctl: the service's user and credentials, through systemd.
STEERHOOKCTL="systemd-run --quiet --pipe --wait --collect -p User=steerhook -p WorkingDirectory=/var/lib/steerhook \
-p LoadCredential=webhook_secrets:/etc/steerhook/credentials/webhook_secrets \
-p LoadCredential=opensteer_api_key:/etc/steerhook/credentials/opensteer_api_key \
-p LoadCredential=smtp_password:/etc/steerhook/credentials/smtp_password \
/usr/bin/steerhook --config /etc/steerhook/steerhook.toml"
steerhookctl() {
    echo "root@steerhook-drill:~# steerhookctl $*"
    ct sh -c "$STEERHOOKCTL $*" 2>&1 | sed 's/^/    /'
}
if steerhookctl doctor; then pass "steerhook doctor: every check passed"; else fail "steerhook doctor"; fi
sent=$(steerhookctl send-test --run-id run_drill_1 || true)
echo "$sent"
case "$sent" in
    *202*accepted*) pass "send-test through the running service: 202 accepted" ;;
    *) fail "send-test was not accepted" ;;
esac
run "runuser -u steerhook -- steerhook events list"
check "the event is stored, readable by the steerhook user" \
    "runuser -u steerhook -- steerhook events list | grep -q run_drill_1"
run "ls -la /var/lib/steerhook"

echo
note "--- upgrade over itself, with an edited config"
run "sed -i 's/^retention_days = 30 /retention_days = 14 /' /etc/steerhook/steerhook.toml && grep '^retention_days' /etc/steerhook/steerhook.toml"
main_pid_before=$(ct systemctl show -p MainPID --value steerhook)
run "apt-get install -y ./$(basename "$DEB2")" | grep -v -e 'Reading database' -e 'Reading package lists' -e 'Building dependency tree' -e 'Reading state information' || true
check "dpkg says 0.1.0-2 is installed" "dpkg-query -W -f='\${Version}' steerhook | grep -q -- '-2\$'"
check "the edited config survived the upgrade" "grep -q '^retention_days = 14 ' /etc/steerhook/steerhook.toml"
check "no .dpkg-dist or .dpkg-new beside it" "! ls /etc/steerhook/steerhook.toml.dpkg-* 2>/dev/null"
mode_is /etc/steerhook/steerhook.toml "640 root:steerhook"
poll 30 active || true
main_pid_after=$(ct systemctl show -p MainPID --value steerhook)
run "systemctl is-active steerhook; systemctl show -p MainPID steerhook" || true
if active && [ "$main_pid_after" != "$main_pid_before" ] && [ "$main_pid_after" != 0 ]; then
    pass "the running daemon was restarted onto the upgrade (MainPID $main_pid_before -> $main_pid_after)"
else
    fail "the daemon was not restarted by the upgrade (MainPID $main_pid_before -> $main_pid_after)"
fi
run "CREDENTIALS_DIRECTORY=/etc/steerhook/credentials steerhook check-config | grep database"
check "check-config reads the edited config (retention 14 days)" \
    "CREDENTIALS_DIRECTORY=/etc/steerhook/credentials steerhook check-config | grep -q 'retention 14 days'"
check "the event is still there" "runuser -u steerhook -- steerhook events list | grep -q run_drill_1"

echo
note "--- remove"
run "apt-get remove -y steerhook" | grep -v -e 'Reading database' -e 'Reading package lists' -e 'Building dependency tree' -e 'Reading state information' || true
check "the service is stopped" "! systemctl is-active --quiet steerhook"
check "the binary and the unit are gone" "[ ! -e /usr/bin/steerhook ] && [ ! -e /usr/lib/systemd/system/steerhook.service ]"
check "the config (with its edit) and the secrets stay" \
    "grep -q '^retention_days = 14 ' /etc/steerhook/steerhook.toml && grep -q '$SECRET' /etc/steerhook/credentials/webhook_secrets"
check "the database stays" "[ -s /var/lib/steerhook/steerhook.db ]"
run "dpkg -l steerhook | tail -n 1; ls -la /etc/steerhook"

echo
note "--- purge"
run "apt-get purge -y steerhook" | grep -v -e 'Reading database' -e 'Reading package lists' -e 'Building dependency tree' -e 'Reading state information' || true
check "dpkg has forgotten steerhook" "! dpkg-query -W steerhook 2>/dev/null"
check "the config and the secrets are gone" "[ ! -e /etc/steerhook ]"
check "the enablement link is gone" "[ ! -e /etc/systemd/system/multi-user.target.wants/steerhook.service ]"
check "the database and the steerhook user remain" "[ -s /var/lib/steerhook/steerhook.db ] && getent passwd steerhook >/dev/null"
run "ls -la /etc/steerhook /var/lib/steerhook; getent passwd steerhook" || true

stop_container
finish
