"""sd_notify: tell systemd READY=1, STATUS=..., WATCHDOG=1, EXTEND_TIMEOUT_USEC=..., STOPPING=1.

Uses systemd-python's `systemd.daemon.notify` when it imports, else the protocol itself: one datagram of
newline-separated KEY=VALUE lines to the AF_UNIX socket in $NOTIFY_SOCKET (a path, or an abstract name
written with a leading '@'). Without $NOTIFY_SOCKET every call is a no-op, so the daemon runs the same
outside systemd.
"""
import logging
import os
import socket

log = logging.getLogger("edge.service")

try:  # optional: python3-systemd / systemd-python
    from systemd import daemon as _sd_daemon
except ImportError:  # the built-in protocol below serves
    _sd_daemon = None


def _address(value):
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise ValueError("NOTIFY_SOCKET %r is neither a path nor an abstract name (@...)" % value)


class Notifier:
    def __init__(self, environ=None, use_library=True):
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET")
        self.use_library = use_library and _sd_daemon is not None
        self._sock = None
        self.watchdog_usec = self._watchdog_usec(env)

    @staticmethod
    def _watchdog_usec(env):
        """$WATCHDOG_USEC if it is meant for this process (WATCHDOG_PID unset or ours), else 0."""
        try:
            usec = int(env.get("WATCHDOG_USEC", "0"))
        except ValueError:
            return 0
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            return 0
        return max(0, usec)

    @property
    def enabled(self):
        return bool(self.socket_path)

    def notify(self, **fields):
        """notify(READY=1, STATUS='...'): one datagram; False when not under systemd or on error."""
        if not self.socket_path:
            return False
        message = "\n".join("%s=%s" % (k, str(v).replace("\n", " ")) for k, v in fields.items())
        try:
            if self.use_library:
                return bool(_sd_daemon.notify(message))
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.sendto(message.encode("utf-8"), _address(self.socket_path))
            return True
        except (OSError, ValueError) as exc:  # systemd gone or a bad address: the daemon keeps serving
            log.warning("sd_notify failed: %s", exc)
            return False

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None
