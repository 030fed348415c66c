#!/usr/bin/env bash
# Make sure an MQTT broker listens on HOST:PORT (default 127.0.0.1:1883): if nothing does, start
# mosquitto there (installing Debian's package first when run as root and it is missing).
set -euo pipefail
host=${1:-127.0.0.1}
port=${2:-1883}
listening() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }
if listening; then
    echo "broker: something already listens on $host:$port"
    exit 0
fi
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "broker: installing mosquitto"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
    else
        echo "broker: nothing listens on $host:$port and mosquitto is not installed (sudo apt-get install mosquitto)" >&2
        exit 1
    fi
fi
bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
mkdir -p state
conf=state/mosquitto-demo.conf
printf 'listener %s %s\nallow_anonymous true\npersistence false\n' "$port" "$host" > "$conf"
"$bin" -c "$conf" -d
for _ in $(seq 1 50); do
    listening && { echo "broker: started mosquitto on $host:$port; it keeps running after the demo (stop it: pkill -f $conf)"; exit 0; }
    sleep 0.1
done
echo "broker: mosquitto did not come up on $host:$port" >&2
exit 1
