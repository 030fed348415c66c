"""Model packages: keygen, pack, verify. A good package verifies; each kind of damage or mismatch is
refused with exit 2 and a line naming it (real tar files, real keys, real ONNX models on ONNX Runtime)."""
import json
import os
import stat
import tarfile

import pytest

from edge.cli import main
from edge.ota import OtaError, signing
from edge.ota.package import open_package
from helpers import run_cli
from onnx_models import make_lprnet_like
from ota_helpers import (US_CHARS, US_NAME, forge, manifest_of, read_member, resaved_model, rewrite_package,
                         sample_golden_set)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A golden set of real crops, a signing key, a second key, a re-saved shipped model, a good package."""
    root = tmp_path_factory.mktemp("kit")
    golden = sample_golden_set(str(root / "golden"))
    key = str(root / "signing.key")
    signing.keygen(key)
    other = str(root / "other.key")
    signing.keygen(other)
    model = resaved_model(root / "m2.onnx", "v2")
    package = str(root / "good.tar")
    assert main(["model", "pack", "--model", model, "--characters", US_CHARS, "--name", US_NAME, "--version",
                 "2026.12.01", "--serial", "2", "--golden", golden, "--key", key, "--out", package]) == 0
    return {"root": root, "golden": golden, "key": key, "pub": key + ".pub", "other_pub": other + ".pub",
            "model": model, "package": package}


def verify(package, pub, capsys):
    code = main(["model", "verify", package, "--public-key", pub])
    return code, capsys.readouterr()


def test_keygen_writes_private_0600_and_public_and_refuses_to_overwrite(tmp_path, capsys):
    key = str(tmp_path / "k")
    assert main(["model", "keygen", key]) == 0
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert b"PUBLIC KEY" in open(key + ".pub", "rb").read()
    assert b"PRIVATE KEY" in open(key, "rb").read()
    before = open(key, "rb").read()
    assert main(["model", "keygen", key]) == 2
    assert "already exists" in capsys.readouterr().err
    assert open(key, "rb").read() == before


def test_good_package_verifies_and_lists_every_file(kit, capsys):
    code, out = verify(kit["package"], kit["pub"], capsys)
    assert code == 0, out.err
    assert "OK" in out.out and "golden set 100.0%" in out.out
    manifest = manifest_of(kit["package"])
    assert manifest["kind"] == "recognizer" and manifest["serial"] == 2 and manifest["golden"]["count"] >= 8
    assert manifest["contract"]["input"]["shape"] == ["N", 3, 48, 96] and manifest["contract"]["classes"] == 36
    with tarfile.open(kit["package"]) as tar:
        names = set(m.name for m in tar.getmembers())
    assert names == set(manifest["files"]) | {"manifest.json", "manifest.sig"}
    import jsonschema

    from edge.ota.package import load_manifest_schema

    jsonschema.validate(manifest, load_manifest_schema())


def test_verify_exit_codes_as_a_subprocess(kit, tmp_path):
    ok = run_cli("model", "verify", kit["package"], "--public-key", kit["pub"])
    assert ok.returncode == 0, ok.stderr
    bad = run_cli("model", "verify", kit["package"], "--public-key", kit["other_pub"])
    assert bad.returncode == 2 and "not one of the trusted keys" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_tampered_file_is_refused(kit, tmp_path, capsys):
    chars = read_member(kit["package"], "characters.txt")
    swapped = chars.replace(b"A", b"#", 1)  # same size, other bytes
    bad = rewrite_package(kit["package"], str(tmp_path / "t.tar"), replace={"characters.txt": swapped})
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "'characters.txt' has sha256" in out.err and "changed after signing" in out.err


def test_tampered_model_is_refused(kit, tmp_path, capsys):
    data = bytearray(read_member(kit["package"], "model.onnx"))
    data[len(data) // 2] ^= 0xFF
    bad = rewrite_package(kit["package"], str(tmp_path / "t.tar"), replace={"model.onnx": bytes(data)})
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "'model.onnx' has sha256" in out.err


def test_tampered_manifest_is_refused(kit, tmp_path, capsys):
    manifest = read_member(kit["package"], "manifest.json").replace(b'"serial": 2', b'"serial": 20')
    bad = rewrite_package(kit["package"], str(tmp_path / "t.tar"), replace={"manifest.json": manifest})
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "does not match the manifest" in out.err


def test_wrong_key_is_refused(kit, capsys):
    code, out = verify(kit["package"], kit["other_pub"], capsys)
    assert code == 2 and "not one of the trusted keys" in out.err


def test_unsigned_is_refused_unless_allowed(kit, tmp_path, capsys):
    bad = rewrite_package(kit["package"], str(tmp_path / "u.tar"), drop=("manifest.sig",))
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "is not signed" in out.err
    assert main(["model", "verify", bad, "--allow-unsigned"]) == 0


@pytest.mark.parametrize("name,why", [("../evil.txt", "leaves the package"), ("/etc/evil", "absolute"),
                                      ("golden/../../x", "leaves the package")])
def test_traversal_member_is_refused(kit, tmp_path, capsys, name, why):
    info = tarfile.TarInfo(name)
    info.size = 4
    bad = rewrite_package(kit["package"], str(tmp_path / "e.tar"), add=[(info, b"evil")])
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and why in out.err
    assert not os.path.exists(str(tmp_path / "evil.txt"))


def test_link_and_unlisted_members_are_refused(kit, tmp_path, capsys):
    link = tarfile.TarInfo("golden/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bad = rewrite_package(kit["package"], str(tmp_path / "l.tar"), add=[(link, None)])
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "is a link" in out.err
    extra = tarfile.TarInfo("extra.bin")
    extra.size = 3
    bad = rewrite_package(kit["package"], str(tmp_path / "x.tar"), add=[(extra, b"abc")])
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "not listed in the manifest" in out.err


def test_not_a_tar_and_size_cap(kit, tmp_path, capsys):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"\x00garbage" * 1000)
    code, out = verify(str(junk), kit["pub"], capsys)
    assert code == 2 and "not a model package" in out.err
    with pytest.raises(OtaError) as err:
        open_package(kit["package"], [signing.load_public_key(kit["pub"])], max_bytes=1 << 20)
    assert err.value.code == "too_large"


def test_non_onnx_model_is_refused(kit, tmp_path, capsys):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"this is not a model\n" * 50)
    bad = forge(tmp_path / "n.tar", str(fake), US_CHARS, kit["key"])
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "ONNX Runtime cannot load it" in out.err


def test_wrong_input_shape_is_refused(kit, tmp_path, capsys):
    model = make_lprnet_like(tmp_path / "s.onnx", input_shape=("N", 3, 24, 94))
    bad = forge(tmp_path / "s.tar", model, US_CHARS, kit["key"])
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "input image_input has shape ['N', 3, 24, 94]" in out.err


def test_characters_not_matching_the_output_width_are_refused(kit, tmp_path, capsys):
    model = make_lprnet_like(tmp_path / "c.onnx", n_classes=36, class_probs=True)
    short = tmp_path / "short.txt"
    short.write_text("".join(c + "\n" for c in "ABCDEFGHIJKLMNOPQRST"))  # 20 characters: 21 classes
    bad = forge(tmp_path / "c.tar", model, str(short), kit["key"])
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "must be [N, T, 21]" in out.err
    # pack refuses to make such a package in the first place
    assert main(["model", "pack", "--model", model, "--characters", str(short), "--name", "x", "--version", "1",
                 "--serial", "1", "--key", kit["key"], "--out", str(tmp_path / "never.tar")]) == 2
    assert not os.path.exists(str(tmp_path / "never.tar"))


def test_manifest_contract_must_describe_the_model_it_holds(kit, tmp_path, capsys):
    contract = {"input": {"name": "image_input", "shape": ["N", 3, 48, 96], "dtype": "float32"},
                "outputs": ["tf_op_layer_ArgMax", "tf_op_layer_Max"], "classes": 36, "timesteps": 18}
    model = make_lprnet_like(tmp_path / "t.onnx")  # 24 timesteps
    bad = forge(tmp_path / "t.tar", model, US_CHARS, kit["key"], contract=contract)
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "declares timesteps 18 but the model has 24" in out.err


def test_golden_set_below_the_manifest_accuracy_is_refused(kit, tmp_path, capsys):
    model = make_lprnet_like(tmp_path / "g.onnx", force_class=3)  # reads "3" on every plate
    bad = forge(tmp_path / "g.tar", model, US_CHARS, kit["key"], golden_dir=kit["golden"])
    code, out = verify(bad, kit["pub"], capsys)
    assert code == 2 and "golden set: 0.0% full-plate accuracy" in out.err and "at least 100.0%" in out.err


def test_pack_needs_a_key_and_a_readable_model(kit, tmp_path, capsys):
    assert main(["model", "pack", "--model", kit["model"], "--characters", US_CHARS, "--name", "x", "--version", "1",
                 "--serial", "1", "--out", str(tmp_path / "p.tar")]) == 2
    assert "--key KEYFILE is required" in capsys.readouterr().err
    assert main(["model", "pack", "--model", str(tmp_path / "none.onnx"), "--characters", US_CHARS, "--name", "x",
                 "--version", "1", "--serial", "1", "--key", kit["key"], "--out", str(tmp_path / "p.tar")]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["model", "pack", "--model", kit["model"], "--characters", US_CHARS, "--name", "x", "--version", "1",
                 "--serial", "1", "--key", kit["pub"], "--out", str(tmp_path / "p.tar")]) == 2
    assert "not an unencrypted PEM private key" in capsys.readouterr().err
    assert os.listdir(str(tmp_path)) == []  # no half-written package


def test_detector_kind_is_refused_by_pack_for_now(kit, tmp_path, capsys):
    assert main(["model", "pack", "--model", kit["model"], "--characters", US_CHARS, "--name", "d", "--version", "1",
                 "--serial", "1", "--kind", "detector", "--key", kit["key"], "--out", str(tmp_path / "d.tar")]) == 2
    assert "detector is not supported yet" in capsys.readouterr().err


def test_training_export_writes_a_package(kit, tmp_path):
    pytest.importorskip("torch")
    from edge.training.cli import main as train_main

    from helpers import ROOT

    out = str(tmp_path / "us.onnx")
    package = str(tmp_path / "us.tar")
    assert train_main(["export", "--checkpoint", os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx"),
                       "--output", out, "--package", package, "--name", US_NAME, "--version", "3", "--serial", "3",
                       "--key", kit["key"], "--golden", kit["golden"], "--min-accuracy", "0.8"]) == 0
    assert os.path.exists(str(tmp_path / "us.characters.txt"))
    manifest = manifest_of(package)
    assert manifest["golden"]["plate_accuracy"] == 0.8 and "class_probs" in manifest["contract"]["outputs"]
    assert main(["model", "verify", package, "--public-key", kit["pub"]]) == 0
    assert json.loads(read_member(package, "manifest.sig").decode())["key_id"] == \
        signing.key_id(signing.load_public_key(kit["pub"]))
