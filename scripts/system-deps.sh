#!/usr/bin/env bash
# Debian packages the daemon's tests and demo need: a real mosquitto broker, fonts for the
# synthetic plate generator, ffmpeg for the sample video, systemd-analyze, openssl and GStreamer's RTSP server for the tests. Installs what is missing when run as root, else says what to install.
# `system-deps.sh demo` installs only what `make run` needs: a broker and its command-line clients.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)  # the README's way to watch events
# Debian's python3 makes no venv without python3-venv (ensurepip); a pyenv or python.org Python has it built in
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
install_needed() {
    [ ${#need[@]} -eq 0 ] && exit 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "system-deps: installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || true
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
        # Debian starts the packaged broker on :1883; tests start their own on free ports.
        exit 0
    fi
    echo "system-deps: missing Debian packages: ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
    exit 1
}
[ "${1:-all}" = demo ] && install_needed
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf ] || need+=(fonts-dejavu-core)
[ -e /usr/share/fonts/truetype/liberation/LiberationSansNarrow-Bold.ttf ] || need+=(fonts-liberation)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)   # `systemd-analyze verify` on the unit
command -v openssl >/dev/null 2>&1 || need+=(openssl)           # test CA for the TLS tests
# a real RTSP camera for the capture tests: scripts/rtsp_serve.py on Debian's Python with GStreamer
/usr/bin/python3 -c 'import gi; gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst; Gst.init(None)
assert Gst.ElementFactory.find("qtdemux") and Gst.ElementFactory.find("rtph264pay")' >/dev/null 2>&1 ||
    need+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good)
install_needed
