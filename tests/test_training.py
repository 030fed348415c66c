"""Training tools: spec validation, dataset checks, a short real training run, export with the
deployable contract, and ONNX Runtime decoding the same strings as PyTorch."""
import os

import cv2
import numpy as np
import pytest

from edge.dataset import DatasetError, load_characters, load_dataset
from helpers import ROOT

import torch  # noqa: E402 - the train extra; make test installs it, so a missing torch fails here

from edge.training.export import OUTPUT_NAMES, check_same_reads, export_onnx  # noqa: E402
from edge.training.model import LPRNet, LPRNetConfig, count_macs  # noqa: E402
from edge.training.spec import SpecError, load_spec  # noqa: E402
from edge.training.train import generate_synthetic, learning_rate, train  # noqa: E402

US_CHARS = os.path.join(ROOT, "models", "us_lp_characters.txt")

SPEC = """
random_seed: 3
model_name: tiny
lpr_config: {hidden_units: 16, nlayers: 10, width: 0.125, max_label_length: 8}
training_config: {batch_size_per_gpu: 16, num_epochs: 1, threads: 1}
dataset_config:
  characters_list_file: %s
  synthetic: {region: us, count: 48}
  validation_synthetic: 8
"""


def write(path, text):
    path.write_text(text)
    return str(path)


def test_nvidia_architecture_sizes():
    b18 = LPRNet(LPRNetConfig(35, 18, 512, 1.0))
    params = sum(p.numel() for p in b18.parameters() if p.requires_grad)
    assert 14.0e6 < params < 14.6e6  # shared/docs/lprnet.md 1.5: 14.4 M
    assert abs(count_macs(LPRNetConfig(35, 18, 512, 1.0)) / 1e9 - 3.03) < 0.05
    assert abs(count_macs(LPRNetConfig(35, 10, 512, 1.0)) / 1e9 - 1.55) < 0.05
    out = b18(torch.rand(2, 3, 48, 96))
    assert tuple(out.shape) == (2, 24, 36)


def test_spec_unknown_key_is_named(tmp_path):
    path = write(tmp_path / "s.yaml", SPEC % US_CHARS + "training_config2: {}\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "s.yaml" in str(info.value) and "training_config2" in str(info.value)


def test_spec_bad_value_is_named(tmp_path):
    path = write(tmp_path / "s.yaml", (SPEC % US_CHARS).replace("nlayers: 10", "nlayers: 12"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "lpr_config/nlayers" in str(info.value)


def test_spec_label_length_beyond_timesteps(tmp_path):
    path = write(tmp_path / "s.yaml", (SPEC % US_CHARS).replace("max_label_length: 8", "max_label_length: 12"))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "max_label_length" in str(info.value)


def test_characters_with_duplicates(tmp_path):
    path = write(tmp_path / "chars.txt", "A\nB\nC\nB\n")
    with pytest.raises(DatasetError) as info:
        load_characters(path)
    assert "chars.txt:4" in str(info.value) and "'B'" in str(info.value)


def test_bad_samples_reported_by_file(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    img = np.full((24, 94, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "image" / "good.jpg"), img)
    (tmp_path / "label" / "good.txt").write_text("ABC123\n")
    cv2.imwrite(str(tmp_path / "image" / "nolabel.jpg"), img)
    cv2.imwrite(str(tmp_path / "image" / "badchar.jpg"), img)
    (tmp_path / "label" / "badchar.txt").write_text("ABC-12\n")
    cv2.imwrite(str(tmp_path / "image" / "long.jpg"), img)
    (tmp_path / "label" / "long.txt").write_text("ABCDEFGHJK\n")
    samples, skipped = load_dataset(str(tmp_path), load_characters(US_CHARS), max_label_length=8)
    assert [os.path.basename(s.image_path) for s in samples] == ["good.jpg"]
    reasons = {os.path.basename(p): r for p, r in skipped}
    assert "no label" in reasons["nolabel.jpg"]
    assert "not in the list" in reasons["badchar.txt"] and "-" in reasons["badchar.txt"]
    assert "max_label_length" in reasons["long.txt"]


def test_learning_rate_schedule():
    cfg = {"min_learning_rate": 1e-5, "max_learning_rate": 1e-3, "soft_start": 0.1, "annealing": 0.5}
    assert learning_rate(0.0, cfg) == pytest.approx(1e-5)
    assert learning_rate(0.3, cfg) == pytest.approx(1e-3)
    assert learning_rate(1.0, cfg) == pytest.approx(1e-5)


def test_synthetic_generation_is_reproducible():
    a, la = generate_synthetic("ch", 6, seed=5, workers=1)
    b, lb = generate_synthetic("ch", 6, seed=5, workers=1)
    assert la == lb and np.array_equal(a, b) and a.shape == (6, 48, 96, 3)
    chars = set(load_characters(os.path.join(ROOT, "models", "ch_lp_characters.txt")))
    assert all(set(t) <= chars and len(t) in (7, 8) for t in la)


def test_capture_size_passes_every_crop_through_that_resolution():
    """A crop captured 24 rows high and upscaled to 48 keeps almost no vertical detail above 24 rows'
    Nyquist frequency; one made at full resolution keeps several times more."""
    aug = {"capture_size": [94, 24], "tight_crop_prob": 1.0, "clean_prob": 0.0}
    small, labels = generate_synthetic("ch", 16, seed=3, aug=aug, workers=1)
    full, _ = generate_synthetic("ch", 16, seed=3, aug={"clean_prob": 0.0, "tight_crop_prob": 1.0}, workers=1)

    def high_frequency_share(images):
        rows = images.astype(np.float32).mean(-1)
        rows -= rows.mean(axis=1, keepdims=True)
        power = np.abs(np.fft.rfft(rows, axis=1)) ** 2  # along the 48 rows: bins 0..24
        return power[:, 13:].sum() / power[:, 1:].sum()

    assert small.shape == (16, 48, 96, 3) and len(labels) == 16
    assert high_frequency_share(small) < 0.3 * high_frequency_share(full)


def test_spec_capture_size_must_be_a_pair(tmp_path):
    path = write(tmp_path / "s.yaml", (SPEC % US_CHARS) + "augmentation_config: {capture_size: [94]}\n")
    with pytest.raises(SpecError, match="augmentation_config/capture_size"):
        load_spec(path)


def test_train_resume_export_and_ort_agrees(tmp_path):
    spec = load_spec(write(tmp_path / "s.yaml", SPEC % US_CHARS))
    model, chars, history = train(spec, str(tmp_path / "run"), progress=False)
    assert os.path.exists(str(tmp_path / "run" / "last.pt")) and history[0]["epoch"] == 1
    spec["training_config"]["num_epochs"] = 2
    model, chars, history = train(spec, str(tmp_path / "run"), resume=True, progress=False)
    assert [h["epoch"] for h in history] == [1, 2]  # resumed after epoch 1: the run's history carries on
    path = export_onnx(model, str(tmp_path / "tiny.onnx"))
    import onnx

    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["image_input"]
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)
    assert max(o.version for o in onnx.load(path).opset_import) <= 13  # JetPack 4.6's ORT 1.10 / TensorRT 8.x
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 48, 96]
    images, _ = generate_synthetic("us", 16, seed=9, workers=1)
    assert check_same_reads(model, path, images, chars) == []
    # the class probabilities (plate-format decoding reads them) are compared too, not only the texts
    assert len(check_same_reads(model, path, images, chars, tolerance=-1.0)) == len(images)


def test_export_command_writes_onnx_and_weights(tmp_path, capsys):
    from edge.training.cli import main
    from edge.training.train import load_model_from_checkpoint

    spec = load_spec(write(tmp_path / "s.yaml", SPEC % US_CHARS))
    train(spec, str(tmp_path / "run"), progress=False)
    out = str(tmp_path / "tiny.onnx")
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--output", out]) == 0
    assert not os.path.exists(str(tmp_path / "tiny.pt"))  # no second copy of the weights: fine-tuning reads the ONNX
    weights, meta = load_model_from_checkpoint(out, load_characters(US_CHARS))
    assert meta["characters"] == load_characters(US_CHARS) and meta["folded"] and os.path.getsize(out) > 0
    half = str(tmp_path / "tiny_fp16.onnx")
    assert main(["export", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--output", half,
                 "--fp16-weights"]) == 0  # 0: ONNX Runtime reads as PyTorch does
    assert os.path.getsize(half) < 0.6 * os.path.getsize(out)
    import onnxruntime as ort

    sess = ort.InferenceSession(half, providers=["CPUExecutionProvider"])
    assert [i.type for i in sess.get_inputs()] == ["tensor(float)"]  # the contract's I/O stays FP32
    assert [o.name for o in sess.get_outputs()] == list(OUTPUT_NAMES)
    import edge.training.export as export

    good = open(out, "rb").read()
    real_check = export.check_same_reads
    export.check_same_reads = lambda *a, **k: [(0, "ABC123", "ABC128", 0.3)]  # a disagreement, as a broken export gives
    try:
        assert main(["export", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--output", out]) == 1
    finally:
        export.check_same_reads = real_check
    assert open(out, "rb").read() == good and os.path.exists(out + ".unchecked")  # the good model stays
    assert "decode differently" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert main(["export", "--checkpoint", str(tmp_path / "junk.pt"), "--output", str(tmp_path / "j.onnx")]) == 2
    assert "junk.pt: not a checkpoint" in capsys.readouterr().err
    assert not os.path.exists(str(tmp_path / "j.onnx"))


def test_fp16_variant_for_tensorrt_11(tmp_path):
    """FP16 weights and arithmetic inside, the FP32 contract outside; refused (no file left) when its reads
    drift from the FP32 model's."""
    import onnx
    from onnx import TensorProto

    from edge.training.export import export_fp16_variant, fp16_variant_path

    spec = load_spec(write(tmp_path / "s.yaml", SPEC % US_CHARS))
    model, _, _ = train(spec, str(tmp_path / "run"), progress=False)
    images = generate_synthetic("us", 32, seed=9, workers=1)[0]
    out = str(tmp_path / "tiny.onnx")
    path, same = export_fp16_variant(model, out, images, min_same=0.0)
    assert path == fp16_variant_path(out) == str(tmp_path / "tiny.fp16.onnx") and 0.0 <= same <= 1.0
    graph = onnx.load(path)
    weights = [i for i in graph.graph.initializer if len(i.dims) > 1]
    assert weights and all(i.data_type == TensorProto.FLOAT16 for i in weights)
    io = {v.name: v.type.tensor_type.elem_type for v in list(graph.graph.input) + list(graph.graph.output)}
    assert io["image_input"] == io["class_probs"] == io["tf_op_layer_Max"] == TensorProto.FLOAT
    assert [o.name for o in graph.graph.output] == list(OUTPUT_NAMES)
    os.remove(path)
    with pytest.raises(ValueError, match="reads"):
        export_fp16_variant(model, out, images, min_same=1.01)
    assert not os.path.exists(path) and not os.path.exists(path + ".part")


def test_shipped_fp16_variants_read_as_the_fp32_models():
    """The shipped .fp16.onnx files: FP16 weights, FP32 contract, and the same model as the FP32 file (the
    FP32 weights rounded to FP16 match the variant's)."""
    import onnx
    from onnx import numpy_helper

    for region in ("us", "ch"):
        base = os.path.join(ROOT, "models", "%s_lprnet_baseline10_mid" % region)
        fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(base + ".onnx").graph.initializer}
        fp16 = onnx.load(base + ".fp16.onnx")
        assert {i.type.tensor_type.elem_type for i in fp16.graph.input} == {1}
        sizes32 = sorted(a.size for a in fp32.values() if a.ndim > 1)
        sizes16 = sorted(numpy_helper.to_array(i).size for i in fp16.graph.initializer if len(i.dims) > 1)
        assert sizes16 == sizes32, region  # the same weights, layer for layer


def _bn_stats(model):
    return [m.running_mean.clone() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@pytest.mark.parametrize("fp16_weights", [False, True])
def test_fine_tune_starts_from_an_onnx(tmp_path, fp16_weights):
    """An exported ONNX (BatchNorm folded, FP32 or FP16-stored weights) read back into PyTorch reads as the
    file does; fine-tuning from it keeps the folded BatchNorm statistics; a file of another shape is refused."""
    from edge.training.export import check_same_reads, export_onnx, store_weights_fp16
    from edge.training.train import load_model_from_checkpoint

    spec = load_spec(write(tmp_path / "s.yaml", SPEC % US_CHARS))
    model, chars, _ = train(spec, str(tmp_path / "run"), progress=False)
    path = export_onnx(model, str(tmp_path / "m.onnx"))
    if fp16_weights:
        store_weights_fp16(path, min_elements=16)
    again, meta = load_model_from_checkpoint(path, chars)
    images, _ = generate_synthetic("us", 16, seed=9, workers=1)
    assert check_same_reads(again, path, images, chars, tolerance=1e-4) == []  # the same function, folded or not
    if not fp16_weights:
        assert check_same_reads(model, path, images, chars) == []
    before = _bn_stats(again)
    tuned, _, history = train(spec, str(tmp_path / "tune"), init_from=path, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_stats(tuned)))  # frozen: batch stats would undo the fold
    assert history and torch.load(str(tmp_path / "tune" / "last.pt"), weights_only=False)["frozen_bn"]
    bad = load_spec(write(tmp_path / "b.yaml", (SPEC % US_CHARS).replace("hidden_units: 16", "hidden_units: 32")))
    with pytest.raises(DatasetError) as info:
        train(bad, str(tmp_path / "run2"), init_from=path, progress=False)
    assert "LSTM" in str(info.value) or "architecture" in str(info.value)


def test_an_onnx_of_another_graph_is_refused_as_a_start(tmp_path):
    from edge.training.train import load_model_from_checkpoint

    detector = os.path.join(ROOT, "models", "lpr_edge_lpd_mid.onnx")
    with pytest.raises(DatasetError) as info:
        load_model_from_checkpoint(detector, load_characters(US_CHARS))
    assert "not an lpr-edge LPRNet ONNX" in str(info.value) and "LSTM" in str(info.value)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(DatasetError) as info:
        load_model_from_checkpoint(str(tmp_path / "junk.onnx"), load_characters(US_CHARS))
    assert "not an ONNX file" in str(info.value)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DatasetError):
        load_model_from_checkpoint(str(tmp_path / "junk.pt"))


def test_the_shipped_onnx_reads_back_exactly():
    """Fine-tuning starts from the shipped files themselves (no .pt beside them)."""
    from edge.training.export import check_same_reads
    from edge.training.train import load_model_from_checkpoint

    for region in ("us", "ch"):
        path = os.path.join(ROOT, "models", "%s_lprnet_baseline10_mid.onnx" % region)
        model, meta = load_model_from_checkpoint(path)  # characters from the manifest
        assert len(meta["characters"]) == {"us": 35, "ch": 67}[region]
        images = generate_synthetic(region, 32, seed=5, workers=1)[0]
        assert check_same_reads(model, path, images, meta["characters"], tolerance=1e-3) == []
        assert not os.path.exists(os.path.splitext(path)[0] + ".pt")


def test_budget_anneals_by_the_clock():
    from edge.training.train import schedule_progress

    assert schedule_progress(50, 100, 10.0) == pytest.approx(0.5)  # no budget: steps alone
    assert schedule_progress(50, 100, 54.0, budget_minutes=1) == pytest.approx(0.9)  # the clock is ahead
    assert schedule_progress(90, 100, 6.0, budget_minutes=1) == pytest.approx(0.9)  # the steps are ahead
    assert schedule_progress(10, 100, 600.0, budget_minutes=1) == 1.0


def test_plate_style_keys_leave_the_default_stream_alone():
    """make train-* reproduce their sets only if a spec without the style keys draws what it drew before."""
    plain = generate_synthetic("us", 12, seed=8, workers=1)
    explicit = generate_synthetic("us", 12, seed=8, aug={"side_text_prob": 0.0, "letter_i_weight": 1.0,
                                                         "province_bold": 0.0}, workers=1)
    assert plain[1] == explicit[1] and np.array_equal(plain[0], explicit[0])


def test_letter_i_weight_makes_i_rare():
    from edge.training.synth import random_us_text

    def share_of_i(weight):
        rng = np.random.default_rng(1)
        letters = [c for _ in range(3000) for c in random_us_text(rng, weight)[0] if c.isalpha()]
        return letters.count("I") / float(len(letters))

    assert share_of_i(1.0) == pytest.approx(1 / 25.0, rel=0.25)  # as often as any of the 25 letters
    assert share_of_i(0.2) < 0.35 * share_of_i(1.0)


def test_side_text_stays_in_its_column_and_out_of_the_label():
    from edge.training import synth

    rng = np.random.default_rng(4)
    canvas = np.full((120, 240, 3), 255, np.uint8)
    synth._draw_side_text(canvas, rng, (10, 30, 14, 60), (0, 0, 0), synth.fonts())
    ink = canvas.min(-1) < 128
    assert ink[30:90, 10:24].sum() > 40 and ink.sum() == ink[30:90, 10:24].sum()
    plate, text = synth.render_us_v2(np.random.default_rng(5), "ABC123", style={"side_text_prob": 1.0})
    assert text == "ABC123" and plate.shape == (120, 240, 3)


def test_province_bold_thickens_strokes():
    from edge.training import synth

    def ink(bold):
        canvas = np.full((105, 60, 3), 255, np.uint8)
        synth.draw_stretched(canvas, "皖", synth.fonts().cjk[0], (5, 10, 45, 80), (0, 0, 0), synth.fonts(), bold=bold)
        return (canvas.min(-1) < 128).sum()

    assert ink(0.08) > 1.3 * ink(0.0) > 0


def test_spec_style_values_are_checked(tmp_path):
    path = write(tmp_path / "s.yaml", (SPEC % US_CHARS) + "augmentation_config: {province_bold: 0.5}\n")
    with pytest.raises(SpecError, match="augmentation_config/province_bold"):
        load_spec(path)


def test_synthetic_cache_returns_the_same_set(tmp_path, monkeypatch):
    monkeypatch.setenv("LPR_EDGE_SYNTH_CACHE", str(tmp_path / "cache"))
    first = generate_synthetic("ch", 6, seed=2, workers=1)
    files = os.listdir(str(tmp_path / "cache"))
    assert len(files) == 1 and files[0].endswith(".npz")  # written whole: no .part left
    again = generate_synthetic("ch", 6, seed=2, workers=1)
    assert first[1] == again[1] and np.array_equal(first[0], again[0])
    other = generate_synthetic("ch", 6, seed=3, workers=1)  # another seed is another key
    assert other[1] != first[1] and len(os.listdir(str(tmp_path / "cache"))) == 2
    path = tmp_path / "cache" / files[0]
    path.write_bytes(path.read_bytes()[:100])  # a damaged cache file is drawn again, not a crash
    assert generate_synthetic("ch", 6, seed=2, workers=1)[1] == first[1]
    assert generate_synthetic("ch", 6, seed=2, workers=1)[1] == first[1]  # and rewritten whole


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_asked_for_without_a_gpu_is_a_clear_error(tmp_path):
    spec = load_spec(write(tmp_path / "s.yaml", SPEC % US_CHARS))
    with pytest.raises(DatasetError, match="no CUDA GPU"):
        train(spec, str(tmp_path / "run"), progress=False, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (runs on a GPU machine)")
def test_training_on_the_gpu_matches_the_cpu_contract(tmp_path):
    """On a CUDA machine: train on the GPU, get the model back on the CPU, export, ONNX Runtime agrees."""
    spec = load_spec(write(tmp_path / "s.yaml", SPEC % US_CHARS))
    model, chars, history = train(spec, str(tmp_path / "run"), progress=False, device="cuda")
    assert next(model.parameters()).device.type == "cpu" and history[0]["epoch"] == 1
    path = export_onnx(model, str(tmp_path / "tiny.onnx"))
    images, _ = generate_synthetic("us", 16, seed=9, workers=1)
    assert check_same_reads(model, path, images, chars) == []


def test_synth_needs_no_torch_and_refuses_a_negative_count(tmp_path):
    """`lpr-edge-train synth` on a machine without torch (a device): torch's import is made to fail."""
    import subprocess
    import sys

    code = ("import sys\n"
            "class NoTorch:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'torch' or name.startswith('torch.'):\n"
            "            raise ImportError('no torch here')\n"
            "sys.meta_path.insert(0, NoTorch())\n"
            "from edge.training.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    out = str(tmp_path / "plates")
    run = subprocess.run([sys.executable, "-c", code, "synth", "--region", "us", "--count", "3", "--out", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(os.listdir(os.path.join(out, "image"))) == 3 and len(os.listdir(os.path.join(out, "label"))) == 3
    bad = subprocess.run([sys.executable, "-c", code, "synth", "--region", "us", "--count", "-2", "--out", out],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "--count must be at least 1" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_refuses_nonpositive_seconds_and_batches():
    from helpers import run_cli

    model = os.path.join(ROOT, "models", "us_lprnet_baseline10_mid.onnx")
    for args, words in ((("--seconds", "-1"), "--seconds must be more than 0"), (("--batch", "0,4"), "at least 1")):
        result = run_cli("bench", "--model", model, *args)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_detector_cut_of_real_crops():
    """Real crops cut as the detect stage cuts them: 96x48 out, the plate shifted and grown, low resolution."""
    from edge.training.synth import detector_cut

    crop = np.zeros((48, 96, 3), np.uint8)
    crop[8:40, 10:86] = 255  # the plate's face
    rng = np.random.default_rng(3)
    outs = [detector_cut(crop, rng) for _ in range(60)]
    assert all(o.shape == (48, 96, 3) and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) == len(outs)  # every epoch a different cut
    bright = [(o.mean(axis=2) > 128).mean() for o in outs]
    assert min(bright) < 0.5 < max(bright)  # grown boxes shrink the face, cut ones enlarge it
    assert np.array_equal(detector_cut(crop, np.random.default_rng(5), jitter=0.0, margin=0.0, heights=(48, 49)),
                          detector_cut(crop, np.random.default_rng(5), jitter=0.0, margin=0.0, heights=(48, 49)))
