"""`make install` into a staging root (DESTDIR), as packagers run it: the venv, unit, config, credentials
and data files land under the root, and the venv names its final place, not the staging folder."""
import os
import subprocess

from helpers import ROOT


def test_install_into_destdir(tmp_path):
    dest = tmp_path / "stage"
    env = dict(os.environ, DESTDIR=str(dest))
    result = subprocess.run(["bash", os.path.join(ROOT, "scripts", "install.sh")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=900)
    assert result.returncode == 0, result.stdout
    root = dest / "opt" / "lpr-edge"
    for rel in ("venv/bin/lpr-edge", "models/manifest.yaml", "models/us_lprnet_baseline10_mid.onnx",
                "venv/share/lpr-edge/configs/schema/config.schema.json", "venv/share/lpr-edge/configs/devices/cpu.yaml",
                "README.md", "docs/config.md"):
        assert (root / rel).exists(), rel
    for rel in ("lib/systemd/system/lpr-edge.service", "etc/lpr-edge/config.yaml",
                "etc/lpr-edge/credentials/mqtt_password", "usr/lib/sysusers.d/lpr-edge.conf"):
        assert (dest / rel).exists(), rel
    assert oct((dest / "etc/lpr-edge/credentials/mqtt_password").stat().st_mode & 0o777) == "0o600"
    script = (root / "venv/bin/lpr-edge").read_text()
    assert script.startswith("#!/opt/lpr-edge/venv/bin/python") and str(dest) not in script
    # the staged package finds its data files in <venv>/share/lpr-edge, not in this checkout
    config = (dest / "etc/lpr-edge/config.yaml").read_text().replace("/opt/lpr-edge", str(root))
    (tmp_path / "c.yaml").write_text(config)
    check = subprocess.run([str(root / "venv/bin/python"), "-m", "edge", "check-config", "--skip-port",
                            str(tmp_path / "c.yaml")],
                           cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, env=dict(os.environ, PYTHONPATH=""))
    assert check.returncode == 0, check.stdout
    assert str(root / "venv/share/lpr-edge") in subprocess.run(
        [str(root / "venv/bin/python"), "-c", "from edge import resources; print(resources.find_data("
         "'configs/schema/config.schema.json'))"], cwd=str(tmp_path), stdout=subprocess.PIPE,
        universal_newlines=True).stdout
