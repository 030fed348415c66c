"""`backend: tensorrt` on this machine (no TensorRT, no pycuda, no GPU), end to end: the daemon runs the
sample on ONNX Runtime, logs ONE warning naming what is missing and how to install it, /healthz says
degraded with that reason, the status topic and /metrics show the backend in use, and every event of the
sample is published. A real daemon, a real mosquitto, real HTTP."""
import json
import signal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import free_port, run_cli, wait_for
from test_daemon import EVENTS, demo_config, expected_plates, start_daemon
from test_service import get

try:
    import tensorrt  # noqa: F401
    HAVE_TENSORRT = True
except Exception:
    HAVE_TENSORRT = False

pytestmark = pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here: the fallback is not taken")


def test_tensorrt_without_tensorrt_runs_on_onnx_runtime_loudly(broker, subscriber, tmp_path):
    sub = subscriber("lpr-edge/#")
    hport = free_port()
    config = demo_config(tmp_path, broker.port, **{"recognizer": {"backend": "tensorrt"}, "exit_when_sources_end": False,
                                                  "health": {"port": hport}, "mqtt.status_interval_s": 1})
    proc = start_daemon(config)
    try:
        assert wait_for(lambda: len(sub.events(EVENTS)) >= len(expected_plates()) or proc.poll() is not None, 90)
        assert sorted(e["plate"] for e in sub.events(EVENTS)) == sorted(expected_plates())
        code, body = get(hport, "/healthz")
        report = json.loads(body)
        assert code == 200 and report["status"] == "degraded", body
        reason = report["components"]["recognizer"]["reason"]
        assert "running on onnxruntime, not tensorrt" in reason and "TensorRT does not import" in reason
        metrics = {(m.name, tuple(sorted(s.labels.items()))): s.value
                   for m in text_string_to_metric_families(get(hport, "/metrics")[1]) for s in m.samples}
        assert metrics[("lpr_edge_backend_info", (("backend", "onnxruntime"), ("fallback", "1")))] == 1.0
        assert wait_for(lambda: sub.payloads("lpr-edge/demo/status"), 10)
        status = json.loads(sub.payloads("lpr-edge/demo/status")[-1])
        assert status["backend"] == "onnxruntime" and "TensorRT does not import" in status["backend_fallback_reason"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    warnings = [line for line in err.splitlines() if "WARNING" in line or "warning" in line.lower()]
    fallback = [line for line in warnings if "backend tensorrt" in line]
    assert len(fallback) == 1, err
    assert "--system-site-packages" in fallback[0] and "pip install" in fallback[0] and "ONNX Runtime" in fallback[0]
    assert "Traceback" not in err


def test_check_config_and_engines_build_say_what_is_missing(tmp_path):
    config = demo_config(tmp_path, free_port(), **{"recognizer": {"backend": "tensorrt"}})
    result = run_cli("check-config", config)
    assert result.returncode == 0 and "config OK" in result.stdout, result.stderr
    assert "TensorRT does not import" in result.stderr
    result = run_cli("engines", "build", "--config", config)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: model: no TensorRT engine built: TensorRT does not import")
    result = run_cli("engines", "list", "--config", config)
    assert result.returncode == 0 and "no engines in %s" % (tmp_path / "state" / "engines") in result.stdout
    assert run_cli("engines", "build", "--config", str(tmp_path / "nope.yaml")).returncode == 2
