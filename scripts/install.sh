#!/usr/bin/env bash
# Install lpr-edge as a systemd service:
#   user lpr-edge (video group), venv in /opt/lpr-edge/venv (system site packages on a Jetson, for JetPack's
#   OpenCV and TensorRT), models, /etc/lpr-edge/config.yaml (never overwritten), the unit, credentials
#   placeholders; checks the config and loads the model (a TensorRT engine would be built here); then
#   enables and starts the service where systemd runs.
# DESTDIR=/staging installs into a staging root as packagers expect (no user, no systemctl, no model load).
set -euo pipefail
cd "$(dirname "$0")/.."
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/lpr-edge}
UNITDIR=${UNITDIR:-/lib/systemd/system}
# the system's interpreter: a service must not run on one under someone's home (pyenv, conda)
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x /usr/bin/python3 ] && PYTHON=/usr/bin/python3
fi
real_python=$(readlink -f "$(command -v "$PYTHON")")
case "$real_python" in
    /root/*|/home/*)
        echo "install: $PYTHON is $real_python, which the lpr-edge user cannot run; set PYTHON=/usr/bin/python3" >&2
        exit 1;;
esac
root="$DESTDIR$PREFIX"

say() { echo "install: $*"; }

if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install: run as root (sudo make install), or set DESTDIR to stage into a folder" >&2
    exit 1
fi

jetson=0
[ -e /etc/nv_tegra_release ] && jetson=1

# 1. user and group (sysusers.d for packagers; useradd now when installing for real)
install -d "$DESTDIR/usr/lib/sysusers.d"
cat > "$DESTDIR/usr/lib/sysusers.d/lpr-edge.conf" <<'SYSUSERS'
u lpr-edge - "lpr-edge daemon" /var/lib/lpr-edge
m lpr-edge video
SYSUSERS
if [ -z "$DESTDIR" ]; then
    getent group video >/dev/null || groupadd --system video
    if ! id lpr-edge >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/lpr-edge --no-create-home --shell /usr/sbin/nologin lpr-edge
        say "created user lpr-edge"
    fi
    usermod -a -G video lpr-edge
fi

# 2. venv with the package (non-editable)
venv_flags=()
extras="opencv,onnx"
if [ "$jetson" = 1 ]; then
    venv_flags+=(--system-site-packages)  # JetPack's cv2 (GStreamer) and tensorrt
    extras=""
    # NVIDIA's onnxruntime-gpu where installed: pip's CPU onnxruntime must not shadow it
    if "$PYTHON" -c "import onnxruntime" 2>/dev/null; then
        say "using the system's onnxruntime ($("$PYTHON" -c "import onnxruntime as o; print(o.__version__, ','.join(o.get_available_providers()))"))"
    else
        extras="onnx"
    fi
    "$PYTHON" -c "import tensorrt as t; print('install: JetPack TensorRT', t.__version__)" 2>/dev/null ||
        say "JetPack's TensorRT does not import with $PYTHON (apt-get install python3-libnvinfer): the service will run on ONNX Runtime"
fi
install -d "$root"
"$PYTHON" -m venv --clear "${venv_flags[@]}" "$root/venv"  # rebuilt on every install: it holds nothing else
"$root/venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
"$root/venv/bin/python" -m pip install -q ".${extras:+[$extras]}"
if [ "$jetson" = 1 ] && ! "$root/venv/bin/python" -c "import pycuda.driver" 2>/dev/null; then
    # pycuda compiles against JetPack's CUDA (nvcc); without it the TensorRT backend falls back to ONNX Runtime
    if PATH="/usr/local/cuda/bin:$PATH" "$root/venv/bin/python" -m pip install -q ".[tensorrt]"; then
        say "pycuda built against $(/usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1)"
    else
        say "pycuda did not build (is /usr/local/cuda/bin/nvcc there?): the service will run on ONNX Runtime"
    fi
fi
# data files the package looks for under <venv>/share/lpr-edge
share="$root/venv/share/lpr-edge"
install -d "$share/configs/schema" "$share/configs/devices"
install -m 0644 configs/schema/*.json "$share/configs/schema/"
install -m 0644 configs/devices/*.yaml "$share/configs/devices/"
install -d "$root/models" "$root/docs"
install -m 0644 models/*.onnx models/*.txt models/manifest.yaml "$root/models/"
install -m 0644 README.md "$root/README.md"
install -m 0644 docs/*.md "$root/docs/"
if [ -n "$DESTDIR" ]; then  # the venv must name its final place, not the staging root
    grep -rlI --null "$root" "$root/venv/bin" | xargs -0 -r sed -i "s#$root#$PREFIX#g"
fi
say "package installed in $PREFIX/venv"

# 3. config and credentials (kept if present)
install -d -m 0755 "$DESTDIR/etc/lpr-edge"
install -d -m 0700 "$DESTDIR/etc/lpr-edge/credentials"
if [ ! -e "$DESTDIR/etc/lpr-edge/config.yaml" ]; then
    install -m 0640 configs/lpr-edge.example.yaml "$DESTDIR/etc/lpr-edge/config.yaml"
    say "wrote /etc/lpr-edge/config.yaml (edit the camera and broker)"
else
    say "kept the existing /etc/lpr-edge/config.yaml"
fi
for cred in mqtt_password mqtt_client.key; do
    [ -e "$DESTDIR/etc/lpr-edge/credentials/$cred" ] || install -m 0600 /dev/null "$DESTDIR/etc/lpr-edge/credentials/$cred"
done
if [ -z "$DESTDIR" ]; then
    chgrp lpr-edge "$DESTDIR/etc/lpr-edge/config.yaml"
fi

# 4. the unit
install -d "$DESTDIR$UNITDIR"
sed "s#/opt/lpr-edge#$PREFIX#g" systemd/lpr-edge.service > "$DESTDIR$UNITDIR/lpr-edge.service"
chmod 0644 "$DESTDIR$UNITDIR/lpr-edge.service"
say "unit installed as $UNITDIR/lpr-edge.service"

[ -n "$DESTDIR" ] && { say "staged into $DESTDIR"; exit 0; }

# 5. check the config and load the model once (builds a TensorRT engine where the backend has one)
install -d -o lpr-edge -g lpr-edge -m 0700 /var/lib/lpr-edge /var/cache/lpr-edge
skip_port=()  # an upgrade: the running service holds health.port
systemctl is-active --quiet lpr-edge 2>/dev/null && skip_port=(--skip-port)
# with the directories the unit gives the service, so ${CREDENTIALS_DIRECTORY}/... paths and the engine
# cache resolve as they will under systemd
if STATE_DIRECTORY=/var/lib/lpr-edge CACHE_DIRECTORY=/var/cache/lpr-edge CREDENTIALS_DIRECTORY=/etc/lpr-edge/credentials \
        "$PREFIX/venv/bin/lpr-edge" check-config --skip-model "${skip_port[@]}" /etc/lpr-edge/config.yaml >/dev/null; then
    say "config and model checked"
else
    say "the config does not check out yet: fix /etc/lpr-edge/config.yaml, then: systemctl restart lpr-edge"
fi

# 5b. what this device is, and its TensorRT engine built now (as the service user, into the unit's cache
#     directory) so the first start does not spend minutes building it
"$PREFIX/venv/bin/lpr-edge" device 2>&1 | sed 's/^/install: /' || true
if [ "$jetson" = 1 ] || [ -e /dev/nvidia0 ]; then
    if runuser -u lpr-edge -- env CACHE_DIRECTORY=/var/cache/lpr-edge STATE_DIRECTORY=/var/lib/lpr-edge \
            "$PREFIX/venv/bin/lpr-edge" engines build --config /etc/lpr-edge/config.yaml; then
        say "TensorRT engine ready in /var/cache/lpr-edge/engines"
    else
        say "no TensorRT engine built (above): the service runs on ONNX Runtime and /healthz says degraded"
    fi
fi

# 6. enable and start where systemd runs
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --now lpr-edge.service
    say "enabled and started: systemctl status lpr-edge; journalctl -u lpr-edge -f"
else
    say "systemd is not running on this machine: enabling and starting waits for a machine with systemd"
    say "there: systemctl daemon-reload && systemctl enable --now lpr-edge"
fi
