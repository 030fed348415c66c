"""A camera password given inside its URL appears in no log line, no /healthz answer, no MQTT payload (the
retained status topic included) and no check-config output, while the camera streams and while another
camera with credentials fails and reconnects."""
import os
import time

from helpers import ROOT, Subscriber, free_port, run_cli, wait_for
from test_faults import camera, health, launch, stop, write_yaml

SECRET = "s3cretPW-7731"
SECRET_FILE = "f1le-Pass:w/rd"  # from password_file, with characters a URL must escape


def test_camera_password_in_url_is_never_shown(broker, rtsp_camera, tmp_path):
    hport = free_port()
    good = rtsp_camera.url.replace("rtsp://", "rtsp://admin:%s@" % SECRET)
    bad = rtsp_camera.url.rsplit("/", 1)[0] + "/no-such-stream"
    (tmp_path / "cam_pw").write_text(SECRET_FILE + "\n")
    cfg = {"device_id": "sec", "device_profile": "cpu", "state_dir": str(tmp_path / "state"),
           "model": {"path": os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")},
           "cameras": [camera("good", good, open_timeout_s=3), camera("bad", bad, open_timeout_s=3, username="viewer",
                                                                          password_file="cam_pw")],
           "mqtt": {"host": "127.0.0.1", "port": broker.port, "status_interval_s": 1},
           "health": {"port": hport}}
    path = write_yaml(tmp_path, cfg)
    checked = run_cli("check-config", path, "--skip-model", timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert SECRET not in checked.stdout + checked.stderr and "rtsp://***@" in checked.stdout
    sub = Subscriber(broker.port, "#")
    proc = launch(path)
    answers = []
    try:
        assert wait_for(lambda: "streaming" in health(hport)[1]["components"]["camera:good"]["reason"], 30)
        assert wait_for(lambda: "reconnecting" in health(hport)[1]["components"]["camera:bad"]["reason"], 30)
        time.sleep(2.5)  # a few status messages and reconnect attempts
        for path_ in ("/healthz", "/metrics"):
            from test_service import get

            answers.append(get(hport, path_)[1])
    finally:
        out, err = stop(proc)
        sub.close()
    payloads = b"".join(sub.payloads()).decode("utf-8", "replace")
    assert '"cameras"' in payloads and "no-such-stream" in err  # the status topic and the warning were seen
    for text in [out, err, payloads, checked.stdout, checked.stderr] + answers:
        assert SECRET not in text and SECRET_FILE not in text and "f1le-Pass" not in text
    assert "rtsp://***@" in err
