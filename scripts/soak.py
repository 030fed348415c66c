#!/usr/bin/env python3
"""Soak benchmark: the daemon on the looping sample (a file camera and a live RTSP camera) for a given time,
with faults on a schedule, against a real mosquitto and GStreamer's RTSP server, all on loopback.

    .venv/bin/python scripts/soak.py --seconds 600 [--json out.json]

Faults (at fractions of the run): broker stopped and started, RTSP server frozen (SIGSTOP/SIGCONT),
the daemon SIGKILLed and started again, broker frozen. An independent subscriber (its own persistent
session, QoS 1) counts what arrives. Printed at the end: events the daemon committed (from its log) against
events received, lost, duplicated; per fault the seconds until /healthz is ok again; RSS and open fds of the
daemon over time. Everything it starts is stopped at the end (and on Ctrl-C).
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from helpers import Subscriber, free_port, wait_port  # noqa: E402

SAMPLE = os.path.join(ROOT, "samples", "gate_us.mp4")
BIN = os.path.dirname(sys.executable)
ID = re.compile(r"plate \S+ \(.*\) (?:event|held) ([0-9A-HJKMNP-TV-Z]{26})$", re.M)
FAULTS = (  # (fraction of the run, name, seconds it lasts)
    (0.15, "broker stopped", 20),
    (0.35, "rtsp camera frozen", 20),
    (0.55, "daemon SIGKILLed", 0),
    (0.75, "broker frozen", 30),
)


class Proc:
    def __init__(self, cmd, log_path, **kw):
        self.cmd, self.log_path, self.kw = cmd, log_path, kw
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT, **self.kw)
        return self

    def send(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def healthz(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2) as r:
            return json.loads(r.read().decode())
    except Exception:
        return None


def proc_usage(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            rss = [int(line.split()[1]) for line in f if line.startswith("VmRSS:")][0] / 1024.0
        return rss, len(os.listdir("/proc/%d/fd" % pid))
    except (OSError, IndexError):
        return None, None


def write_config(work, broker_port, health_port, rtsp_url):
    import yaml

    cfg = {
        "device_id": "soak", "device_profile": "cpu", "state_dir": os.path.join(work, "state"),
        "model": {"path": os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")},
        "cameras": [
            {"id": "file", "source": SAMPLE, "loop": True, "pacing": "realtime",
             "rois": [{"id": "lane1", "points": [[255, 229], [385, 224], [387, 291], [257, 294]]}]},
            {"id": "rtsp", "source": rtsp_url,
             "rois": [{"id": "lane1", "points": [[255, 229], [385, 224], [387, 291], [257, 294]]}]},
        ],
        "tracking": {"min_confidence": 0.5, "min_reads": 3, "expire_s": 1.0},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "status_interval_s": 5},
        "health": {"port": health_port},
    }
    path = os.path.join(work, "config.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the run (default 600)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.seconds < 60:
        parser.error("--seconds must be at least 60 (the fault schedule needs room)")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    work = tempfile.mkdtemp(prefix="lpr-soak-")
    bport, hport, rport = free_port(), free_port(), free_port()
    conf = os.path.join(work, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("listener %d 127.0.0.1\npersistence true\npersistence_location %s/\nallow_anonymous true\n"
                % (bport, work) + ("user root\n" if os.geteuid() == 0 else ""))
    broker = Proc([mosquitto, "-c", conf], os.path.join(work, "mosquitto.log")).start()
    rtsp = Proc(["/usr/bin/python3", os.path.join(ROOT, "scripts", "rtsp_serve.py"), SAMPLE, "--port", str(rport),
                 "--path", "gate"], os.path.join(work, "rtsp.log")).start()
    daemon_log = os.path.join(work, "daemon.log")
    config = write_config(work, bport, hport, "rtsp://127.0.0.1:%d/gate" % rport)
    daemon = Proc([os.path.join(BIN, "lpr-edge"), "run", "--config", config], daemon_log)
    sub = None
    samples, recoveries = [], []
    try:
        if not (wait_port(bport, 10) and wait_port(rport, 10)):
            raise SystemExit("soak: mosquitto or the RTSP server did not start (see %s)" % work)
        sub = Subscriber(bport, "lpr-edge/soak/events", persistent=True)
        daemon.start()
        start = time.monotonic()
        pending = list(FAULTS)
        active = None  # (name, ends at, undo)
        detected = None  # seconds from a fault's start until /healthz said something is wrong
        while time.monotonic() - start < args.seconds:
            now = time.monotonic() - start
            if active is None and pending and now >= pending[0][0] * args.seconds:
                frac, name, lasts = pending.pop(0)
                print("soak: %5.0f s  %s" % (now, name), flush=True)
                fault_start, detected = time.monotonic(), None
                if name == "broker stopped":
                    broker.stop()
                    active = (name, now + lasts, lambda: broker.start())
                elif name == "rtsp camera frozen":
                    rtsp.send(signal.SIGSTOP)
                    active = (name, now + lasts, lambda: rtsp.send(signal.SIGCONT))
                elif name == "broker frozen":
                    broker.send(signal.SIGSTOP)
                    active = (name, now + lasts, lambda: broker.send(signal.SIGCONT))
                elif name == "daemon SIGKILLed":
                    daemon.stop(signal.SIGKILL)
                    daemon.start()
                    active = (name, now, lambda: None)
            if active is not None and detected is None and active[0] != "daemon SIGKILLed":
                report = healthz(hport)
                if report and report["status"] != "ok":
                    detected = time.monotonic() - fault_start
            if active is not None and now >= active[1]:
                active[2]()
                ended = time.monotonic()
                report = None
                while time.monotonic() - ended < 120:
                    report = healthz(hport)
                    if report and report["status"] == "ok":
                        break
                    time.sleep(0.25)
                took = time.monotonic() - ended
                ok = bool(report and report["status"] == "ok")
                recoveries.append({"fault": active[0], "recovery_s": round(took, 1), "recovered": ok,
                                   "detected_s": round(detected, 1) if detected is not None else None})
                print("soak: %5.0f s  %s over: healthz ok after %.1f s" % (time.monotonic() - start, active[0], took)
                      if ok else "soak: %s over: NOT ok after 120 s: %s" % (active[0], report), flush=True)
                active = None
            rss, fds = proc_usage(daemon.proc.pid)
            if rss and (not samples or now - samples[-1]["t"] >= 10):
                samples.append({"t": round(now), "rss_mb": round(rss or 0, 1), "fds": fds})
            time.sleep(0.25)
        daemon.stop()
        time.sleep(5)  # what was in flight at the stop is in the outbox: a last start sends it
        final = Proc([os.path.join(BIN, "lpr-edge"), "run", "--config", config], daemon_log).start()
        time.sleep(10)
        final.stop()
        time.sleep(2)
    finally:
        daemon.stop(signal.SIGKILL)
        if sub is not None:
            sub.close()
        rtsp.send(signal.SIGCONT)
        rtsp.stop()
        broker.send(signal.SIGCONT)
        broker.stop()
    with open(daemon_log, errors="replace") as f:
        log_text = f.read()
    committed = ID.findall(log_text)
    received = [e["id"] for e in sub.events("lpr-edge/soak/events")] if sub else []
    lost = sorted(set(committed) - set(received))
    result = {
        "seconds": args.seconds, "committed": len(set(committed)), "received": len(set(received)),
        "lost": len(lost), "duplicated": len(received) - len(set(received)), "recoveries": recoveries,
        "rss_mb": [s["rss_mb"] for s in samples], "fds": [s["fds"] for s in samples],
        "tracebacks": log_text.count("Traceback"), "work_dir": work,
    }
    print("\nsoak %.0f s: %d events committed, %d received, %d lost, %d duplicated, %d tracebacks in the log"
          % (args.seconds, result["committed"], result["received"], result["lost"], result["duplicated"],
             result["tracebacks"]))
    for r in recoveries:
        said = "said after %4.1f s" % r["detected_s"] if r["detected_s"] is not None else "not seen by /healthz"
        print("  %-20s %-22s; ok again %5.1f s after it ended%s" % (
            r["fault"], said if r["fault"] != "daemon SIGKILLed" else "", r["recovery_s"],
            "" if r["recovered"] else "  (NOT RECOVERED)"))
    rss = [s["rss_mb"] for s in samples if s["rss_mb"]]
    fds = [s["fds"] for s in samples if s["fds"]]
    if rss:
        warm = [s["rss_mb"] for s in samples if s["t"] >= 30]
        print("  RSS %.0f-%.0f MB after the first 30 s (peak %.0f), open fds %d-%d (every 10 s; daemon restarted once)"
              % (min(warm or rss), max(warm or rss), max(rss), min(fds), max(fds)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rss_mb", "fds")}))
    return 0 if not lost and all(r["recovered"] for r in recoveries) else 1


if __name__ == "__main__":
    sys.exit(main())
