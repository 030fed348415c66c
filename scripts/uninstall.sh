#!/usr/bin/env bash
# Remove what scripts/install.sh installed. Keeps /etc/lpr-edge, /var/lib/lpr-edge (the outbox: events
# not yet delivered) and the user unless PURGE=1.
set -euo pipefail
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/lpr-edge}
UNITDIR=${UNITDIR:-/lib/systemd/system}
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl disable --now lpr-edge.service 2>/dev/null || true
fi
rm -f "$DESTDIR$UNITDIR/lpr-edge.service" "$DESTDIR/usr/lib/sysusers.d/lpr-edge.conf"
rm -rf "$DESTDIR$PREFIX"
[ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
if [ "${PURGE:-0}" = 1 ]; then
    rm -rf "$DESTDIR/etc/lpr-edge" "$DESTDIR/var/lib/lpr-edge" "$DESTDIR/var/cache/lpr-edge"
    [ -z "$DESTDIR" ] && id lpr-edge >/dev/null 2>&1 && userdel lpr-edge
    echo "uninstall: removed lpr-edge, its config, state and user"
else
    echo "uninstall: removed lpr-edge; kept /etc/lpr-edge and /var/lib/lpr-edge (PURGE=1 removes them)"
fi
