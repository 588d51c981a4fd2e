"""Weights: finding files in every accepted layout, strict checks, clear errors, dtype policy,
downloads (network faked). Full loads are few and module-scoped (each reads ~520 MB)."""
from __future__ import annotations

import fractions
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import synth_weights
from conftest import REPO_DIR, compact_file, parity_file
from liveportrait_core import hub
from liveportrait_core.errors import LivePortraitError, WeightsError
from liveportrait_core.models import BASE_NETWORKS, LivePortraitModels
from liveportrait_core.weights import (check_state_dict, load_models, load_network,
                                       locate_weights, read_weights_file, stitching_state_dict)

NETS = (*BASE_NETWORKS, "stitching_retargeting")
MLP_SUBS = {"retarget_shoulder": "stitching", "retarget_mouth": "lip", "retarget_eye": "eye"}


def link_tree(src: str, dst: str, skip=(), rename=None) -> str:
    """Mirror `src` into `dst` with symlinks (cheap copies of the synthetic weight folders)."""
    rename = rename or {}
    for root, _, files in os.walk(src):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), src)
            if rel in skip:
                continue
            target = os.path.join(dst, rename.get(rel, rel))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.path.join(root, f), target)
    return dst


def synth_module_sd(name: str, seed: int = 0) -> dict:
    """Expected state dict of our module `name` (stitching keys renamed like the loader does)."""
    sds = synth_weights.state_dicts(seed)
    if name == "stitching_retargeting":
        return stitching_state_dict(sds["stitching_retargeting_module"])
    return sds[name]


def parity(name: str) -> dict:
    """Stitching / motion-extractor reference outputs: full shared file or the compact copy."""
    full = parity_file(f"{name}.npz")
    if full is None:
        c = np.load(compact_file("weights_parity.npz"))
        if name == "stitching_retargeting":
            return {k: c[k] for k in c.files if not k.startswith("m_")}
        return {k[2:]: c[k] for k in c.files if k.startswith("m_")}
    d = np.load(full)
    if name == "motion_extractor":
        return {"input_u8": d["input_u8"], **{k: d[k] for k in d.files if k.startswith("raw_")}}
    return {k: d[k] for k in d.files}


# ------------------------------------------------------------------------------ loaded models

@pytest.fixture(scope="module")
def models_pth(weights_pth) -> LivePortraitModels:
    return load_models(weights_pth)


@pytest.fixture(scope="module")
def models_st(weights_st) -> LivePortraitModels:
    return load_models(weights_st)


@pytest.fixture(scope="module")
def models_fp16(tmp_path_factory) -> LivePortraitModels:
    """Float16 .safetensors files, loaded with dtype=float16."""
    folder = synth_weights.write_folder(str(tmp_path_factory.mktemp("w_fp16")), 0,
                                        "safetensors-flat", dtype=torch.float16)
    return load_models(folder, dtype=torch.float16)


def test_both_layouts_load_the_exact_synthetic_tensors(models_pth, models_st, weights_pth, weights_st):
    for models in (models_pth, models_st):
        assert models.device == torch.device("cpu") and models.dtype == torch.float32
        assert models.stitching_retargeting is not None and models.landmark_path is None
        assert models.variant == "human"
        names = [n for n, _ in models.networks()]
        assert names == list(NETS)
        for name, module in models.networks():
            assert not module.training
            assert all(not p.requires_grad for p in module.parameters())
            got = module.state_dict()
            for k, v in synth_module_sd(name).items():
                if not k.endswith("num_batches_tracked"):
                    assert got[k].dtype == torch.float32 and torch.equal(got[k], v), (name, k)
    assert models_pth.files["warping_module"] == os.path.join(
        weights_pth, "liveportrait", "base_models", "warping_module.pth")
    assert models_st.files["stitching_retargeting"] == os.path.join(
        weights_st, "stitching_retargeting_module.safetensors")
    assert models_pth.source == weights_pth and models_st.source == weights_st
    assert models_pth.num_parameters() == models_st.num_parameters() > 125_000_000


def test_loaded_mlps_match_reference_outputs(models_pth, models_st):
    ref = parity("stitching_retargeting")
    for models in (models_pth, models_st):
        mlps = models.stitching_retargeting
        with torch.no_grad():
            for fn in ("stitching", "eye", "lip"):
                out = getattr(mlps, fn)(torch.from_numpy(ref[f"{fn}_in"])).numpy()
                want = ref[f"{fn}_out"]
                assert out.shape == want.shape
                assert np.all(np.abs(out - want) <= 1e-5 + 1e-4 * np.abs(want)), fn


def test_loaded_motion_extractor_matches_reference(models_pth):
    # Parameters are identical in both layouts (test above), so one layout suffices here.
    ref = parity("motion_extractor")
    x = torch.from_numpy(ref["input_u8"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        out = models_pth.motion_extractor(x)
    for k in ("pitch", "yaw", "roll", "t", "exp", "scale", "kp"):
        assert np.abs(out[k].numpy() - ref[f"raw_{k}"]).max() <= 1e-5, k


def test_float16_files_and_dtype_policy(models_fp16):
    m = models_fp16
    assert m.dtype == torch.float16
    for name, module in m.networks():
        want_dtype = torch.float32 if name in ("motion_extractor", "stitching_retargeting") else torch.float16
        got = module.state_dict()
        for k, v in synth_module_sd(name).items():
            if v.is_floating_point():
                # fp16 file values, upcast exactly for the float32 networks
                assert got[k].dtype == want_dtype, (name, k)
                assert torch.equal(got[k].float(), v.half().float()), (name, k)
    # Inputs of any float dtype are cast to each network's dtype; M and the MLPs answer in float32.
    with torch.no_grad():
        out = m.motion_extractor(torch.rand(1, 3, 32, 32, dtype=torch.float16))
        assert out["kp"].dtype == torch.float32 and out["kp"].shape == (1, 63)
        assert m.stitching_retargeting.eye(torch.zeros(2, 66, dtype=torch.float16)).dtype == torch.float32
        feat = m.appearance_feature_extractor(torch.rand(1, 3, 16, 16))  # float32 in
        assert feat.dtype == torch.float16 and torch.isfinite(feat).all()


def test_input_cast_hook_casts_only_the_data_input():
    from liveportrait_core.accel.half import inference_setup

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 3)

        def forward(self, feature, kp_source=None):
            return self.lin(feature), kp_source

    net = inference_setup(Net()).to(torch.bfloat16)
    assert not net.training and not net.lin.weight.requires_grad
    kp = torch.rand(2, 3, dtype=torch.float32)
    for out, kp_out in (net(torch.rand(2, 3), kp_source=kp), net(feature=torch.rand(2, 3), kp_source=kp),
                        net(torch.rand(2, 3, dtype=torch.float64), kp)):
        assert out.dtype == torch.bfloat16 and kp_out.dtype == torch.float32  # keypoints untouched
    assert inference_setup(net) is net and len(net._forward_pre_hooks) == 1  # idempotent


def test_fp16_file_loads_exactly_as_float32(tmp_path):
    folder = synth_weights.write_folder(str(tmp_path), 0, "safetensors-flat", dtype=torch.float16)
    module = load_network("appearance_feature_extractor",
                          os.path.join(folder, "appearance_feature_extractor.safetensors"))
    got = module.state_dict()
    for k, v in synth_module_sd("appearance_feature_extractor").items():
        if v.is_floating_point():
            assert got[k].dtype == torch.float32 and torch.equal(got[k], v.half().float()), k


def test_bfloat16_without_stitching_file(weights_st, tmp_path, caplog):
    folder = link_tree(weights_st, str(tmp_path / "w"),
                       skip={"stitching_retargeting_module.safetensors"})
    with caplog.at_level(logging.INFO, logger="liveportrait"):
        m = load_models(folder, dtype=torch.bfloat16)
    assert m.stitching_retargeting is None and not m.has_stitching
    assert any("stitching" in r.getMessage() and "off" in r.getMessage() for r in caplog.records)
    assert [n for n, _ in m.networks()] == list(BASE_NETWORKS)
    dtypes = {n: {p.dtype for p in mod.parameters()} for n, mod in m.networks()}
    assert dtypes == {"appearance_feature_extractor": {torch.bfloat16},
                      "motion_extractor": {torch.float32},
                      "warping_module": {torch.bfloat16}, "spade_generator": {torch.bfloat16}}
    small = m.memory_bytes()
    low = sum(t.numel() for n, mod in m.networks() if n != "motion_extractor"
              for t in (*mod.parameters(), *mod.buffers()) if t.is_floating_point())
    m.to(dtype=torch.float32)  # the policy applies again on .to()
    assert {p.dtype for _, mod in m.networks() for p in mod.parameters()} == {torch.float32}
    assert m.memory_bytes() - small == 2 * low  # bf16 → f32: 2 more bytes per F/W/G value
    assert m.offload() is m and m.device == torch.device("cpu")
    with pytest.raises(ValueError):
        m.to(dtype=torch.float64)


# ----------------------------------------------------------------------------------- locating

def test_reference_tree_can_be_given_at_three_levels(weights_pth):
    base = os.path.join(weights_pth, "liveportrait", "base_models")
    stitch = os.path.join(weights_pth, "liveportrait", "retargeting_models",
                          "stitching_retargeting_module.pth")
    for p in (weights_pth, os.path.join(weights_pth, "liveportrait"), base,
              os.path.join(base, "warping_module.pth")):
        f = locate_weights(p)
        assert f.base_dir == base and f.stitching == stitch and f.variant == "human"
        assert f.networks["spade_generator"] == os.path.join(base, "spade_generator.pth")


def test_landmark_onnx_found_beside_the_weights(weights_pth, weights_st, tmp_path):
    pth = link_tree(weights_pth, str(tmp_path / "pth"))
    (tmp_path / "pth" / "liveportrait" / "landmark.onnx").write_bytes(b"x")
    st = link_tree(weights_st, str(tmp_path / "st"))
    (tmp_path / "st" / "landmark.onnx").write_bytes(b"x")
    assert locate_weights(pth).landmark == os.path.join(pth, "liveportrait", "landmark.onnx")
    assert locate_weights(os.path.join(pth, "liveportrait", "base_models")).landmark == \
        os.path.join(pth, "liveportrait", "landmark.onnx")
    assert locate_weights(st).landmark == os.path.join(st, "landmark.onnx")


def test_safetensors_preferred_when_both_formats_exist(weights_pth, weights_st, tmp_path):
    folder = link_tree(weights_st, str(tmp_path / "mix"))
    os.symlink(os.path.join(weights_pth, "liveportrait", "base_models", "motion_extractor.pth"),
               os.path.join(folder, "motion_extractor.pth"))
    assert locate_weights(folder).networks["motion_extractor"].endswith(".safetensors")


def _animal_tree(weights_pth: str, root: str) -> str:
    """pretrained_weights with liveportrait/ (human) and liveportrait_animals/ (both versions,
    plus an animal retargeting file that the reference does not use)."""
    link_tree(weights_pth, root)
    base = os.path.join(weights_pth, "liveportrait", "base_models")
    for sub in ("base_models", "base_models_v1.1"):
        link_tree(base, os.path.join(root, "liveportrait_animals", sub))
    link_tree(os.path.join(weights_pth, "liveportrait", "retargeting_models"),
              os.path.join(root, "liveportrait_animals", "retargeting_models"))
    open(os.path.join(root, "liveportrait", "landmark.onnx"), "wb").close()
    return root


def test_animal_reference_layout(weights_pth, tmp_path):
    root = _animal_tree(weights_pth, str(tmp_path / "pretrained_weights"))
    human_stitch = os.path.join(root, "liveportrait", "retargeting_models",
                                "stitching_retargeting_module.pth")
    animals = os.path.join(root, "liveportrait_animals")
    cases = {animals: "base_models_v1.1", os.path.join(animals, "base_models_v1.1"): "base_models_v1.1",
             os.path.join(animals, "base_models"): "base_models"}
    for path, sub in cases.items():
        f = locate_weights(path)
        assert f.base_dir == os.path.join(animals, sub) and f.variant == "animal"
        assert f.stitching == human_stitch  # the human file, as the reference does
        assert f.landmark == os.path.join(root, "liveportrait", "landmark.onnx")
    assert locate_weights(root).variant == "human"
    m = load_models(animals)
    assert m.variant == "animal" and m.has_stitching
    assert m.files["motion_extractor"] == os.path.join(animals, "base_models_v1.1", "motion_extractor.pth")
    assert m.files["stitching_retargeting"] == human_stitch


def test_animal_flat_layout_uses_the_human_stitching_file(weights_st, tmp_path):
    root = link_tree(weights_st, str(tmp_path / "liveportrait"))
    link_tree(weights_st, os.path.join(root, "animal"))  # includes its own stitching file
    f = locate_weights(os.path.join(root, "animal"))
    assert f.variant == "animal" and f.base_dir == os.path.join(root, "animal")
    assert f.stitching == os.path.join(root, "stitching_retargeting_module.safetensors")
    assert locate_weights(root).base_dir == root


# ------------------------------------------------------------------------------------- errors

def test_empty_missing_and_incomplete_folders(weights_st, tmp_path):
    with pytest.raises(WeightsError, match="No LivePortrait weights found") as e:
        load_models(str(tmp_path))
    msg = str(e.value)
    assert str(tmp_path) in msg and "motion_extractor.safetensors" in msg
    assert "liveportrait/base_models/motion_extractor.pth" in msg
    assert isinstance(e.value, LivePortraitError) and isinstance(e.value, ValueError)
    with pytest.raises(WeightsError, match="does not exist"):
        load_models(str(tmp_path / "nope"))
    part = link_tree(weights_st, str(tmp_path / "part"), skip={"spade_generator.safetensors"})
    with pytest.raises(WeightsError, match="Incomplete.*not spade_generator"):
        load_models(part)


@pytest.mark.parametrize("layout", ["safetensors", "pth"])
def test_truncated_file(weights_st, weights_pth, tmp_path, layout):
    if layout == "safetensors":
        src = os.path.join(weights_st, "warping_module.safetensors")
    else:
        src = os.path.join(weights_pth, "liveportrait", "base_models", "warping_module.pth")
    bad = str(tmp_path / os.path.basename(src))
    with open(src, "rb") as f:
        data = f.read()
    for cut in (len(data) // 2, len(data) - 10):
        with open(bad, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(WeightsError, match="truncated") as e:
            load_network("warping_module", bad)
        assert bad in str(e.value) and "download it again" in str(e.value)
        assert "Traceback" not in str(e.value) and e.value.__cause__ is None
    open(bad, "wb").close()
    with pytest.raises(WeightsError, match="empty"):
        read_weights_file(bad)


@pytest.mark.parametrize("layout", ["safetensors", "pth"])
def test_file_of_the_wrong_network(weights_st, weights_pth, tmp_path, layout):
    if layout == "safetensors":
        folder = link_tree(weights_st, str(tmp_path / "w"), rename={
            "motion_extractor.safetensors": "warping_module.safetensors",
            "warping_module.safetensors": "motion_extractor.safetensors"})
        bad = os.path.join(folder, "motion_extractor.safetensors")
    else:
        b = os.path.join("liveportrait", "base_models")
        folder = link_tree(weights_pth, str(tmp_path / "w"), rename={
            os.path.join(b, "motion_extractor.pth"): os.path.join(b, "warping_module.pth"),
            os.path.join(b, "warping_module.pth"): os.path.join(b, "motion_extractor.pth")})
        bad = os.path.join(folder, b, "motion_extractor.pth")
    with pytest.raises(WeightsError) as e:
        load_models(folder)
    msg = str(e.value)
    assert bad in msg and "does not fit the motion_extractor network" in msg
    assert "212 missing key(s): detector.downsample_layers.0.0.weight" in msg
    assert "unexpected key(s)" in msg and "look like the warping_module weights" in msg


def test_shape_mismatch_and_extra_keys_are_named(tmp_path):
    sd = dict(synth_module_sd("stitching_retargeting"))
    sd["retarget_eye.mlp.0.weight"] = sd["retarget_eye.mlp.0.weight"][:, :65]
    with pytest.raises(WeightsError, match=r"shape mismatch.*retarget_eye\.mlp\.0\.weight "
                                           r"\(file \[256, 65\], network \[256, 66\]\)"):
        check_state_dict(sd, "stitching_retargeting", "x.safetensors")
    sd = dict(synth_module_sd("appearance_feature_extractor"))
    sd["extra.weight"] = torch.zeros(1)
    del sd["first.conv.weight"]
    with pytest.raises(WeightsError, match=r"1 missing key\(s\): first\.conv\.weight; "
                                           r"1 unexpected key\(s\): extra\.weight"):
        check_state_dict(sd, "appearance_feature_extractor", "f.pth")


def test_missing_num_batches_tracked_is_accepted(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v for k, v in synth_module_sd("appearance_feature_extractor").items()
          if not k.endswith("num_batches_tracked")}
    path = str(tmp_path / "appearance_feature_extractor.safetensors")
    save_file(sd, path)
    module = load_network("appearance_feature_extractor", path)
    counters = {k: v for k, v in module.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counters and all(v.item() == 0 for v in counters.values())


def test_unsafe_and_non_state_dict_pth_files(tmp_path):
    unsafe = str(tmp_path / "motion_extractor.pth")
    torch.save({"detector.norm.weight": torch.ones(768), "x": fractions.Fraction(1, 3)}, unsafe)
    with pytest.raises(WeightsError, match="besides tensors"):
        load_network("motion_extractor", unsafe)
    plain = str(tmp_path / "t.pth")
    torch.save(torch.zeros(3), plain)
    with pytest.raises(WeightsError, match="not a state dict"):
        read_weights_file(plain)


def test_stitching_layouts_normalise_to_the_same_keys():
    nested = synth_weights.state_dicts(0)["stitching_retargeting_module"]
    flat = {f"{s}_{k}": v for s, d in nested.items() for k, v in d.items()}
    a, b = stitching_state_dict(nested), stitching_state_dict(flat)
    assert a.keys() == b.keys() and "retarget_shoulder.mlp.0.weight" in a and len(a) == 28
    assert all(torch.equal(a[k], b[k]) for k in a)
    partial = {"retarget_shoulder": nested["retarget_shoulder"], "other": {}}
    with pytest.raises(WeightsError, match="missing key.*retarget_mouth"):
        check_state_dict(stitching_state_dict(partial), "stitching_retargeting", "s.pth")


# ---------------------------------------------------------------------------------- downloads

def _fake_hub(monkeypatch, src: str, fail_on: str | None = None) -> list:
    """Replace huggingface_hub.hf_hub_download by a local copy from `src`; returns the calls."""
    import huggingface_hub

    calls = []

    def fake(repo_id, filename, *, local_dir=None, **kwargs):
        calls.append((repo_id, filename, local_dir))
        if filename == fail_on:
            raise OSError("Cannot reach https://huggingface.co: offline")
        dst = os.path.join(local_dir, filename)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.exists(os.path.join(src, filename)):
            os.symlink(os.path.join(src, filename), dst)
        else:  # landmark.onnx is not part of the synthetic folders
            with open(dst, "wb") as f:
                f.write(b"onnx")
        return dst

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return calls


def test_download_safetensors(monkeypatch, weights_st, tmp_path):
    folder = str(tmp_path / "models" / "liveportrait")
    want = [f"{n}.safetensors" for n in (*BASE_NETWORKS, "stitching_retargeting_module")] + ["landmark.onnx"]
    assert hub.missing_files(folder) == want
    calls = _fake_hub(monkeypatch, weights_st)
    progress = []
    assert hub.download_models(folder, progress=False,
                               callback=lambda i, n, f: progress.append((i, n, f))) == folder
    assert calls == [("Kijai/LivePortrait_safetensors", f, folder) for f in want]
    assert progress[0] == (0, 6, want[0]) and progress[-1] == (6, 6, "")
    assert hub.missing_files(folder) == []
    f = locate_weights(folder)
    assert f.stitching and f.landmark == os.path.join(folder, "landmark.onnx")
    hub.download_models(folder)  # complete: nothing fetched
    assert len(calls) == 6


def test_download_reference_pth_only_missing_files(monkeypatch, weights_pth, tmp_path):
    folder = str(tmp_path / "pretrained_weights")
    have = "liveportrait/base_models/motion_extractor.pth"
    os.makedirs(os.path.dirname(os.path.join(folder, have)))
    os.symlink(os.path.join(weights_pth, have), os.path.join(folder, have))
    calls = _fake_hub(monkeypatch, weights_pth)
    hub.download_models(folder, layout="pth")
    names = [c[1] for c in calls]
    assert {c[0] for c in calls} == {"KwaiVGI/LivePortrait"} and have not in names
    assert set(names) == set(hub.repo_files("pth")) - {have}
    assert "liveportrait/landmark.onnx" in names
    assert locate_weights(folder).base_dir == os.path.join(folder, "liveportrait", "base_models")
    assert hub.missing_files(folder) == []
    assert hub.repo_files("pth", animal=True)[0] == \
        "liveportrait_animals/base_models_v1.1/appearance_feature_extractor.pth"


def test_download_failure_lists_files_and_folder(monkeypatch, weights_st, tmp_path):
    folder = str(tmp_path / "lp")
    _fake_hub(monkeypatch, weights_st, fail_on="warping_module.safetensors")
    with pytest.raises(WeightsError) as e:
        hub.download_models(folder)
    msg = str(e.value)
    assert "offline" in msg and folder in msg
    for f in ("warping_module.safetensors", "spade_generator.safetensors",
              "stitching_retargeting_module.safetensors", "landmark.onnx"):
        assert f"https://huggingface.co/Kijai/LivePortrait_safetensors/resolve/main/{f}" in msg
        assert os.path.join(folder, f) in msg
    assert "motion_extractor.safetensors" not in msg  # already downloaded before the failure
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(WeightsError, match="huggingface_hub is not installed"):
        hub.download_models(str(tmp_path / "other"), layout="pth")
    with pytest.raises(WeightsError, match="layout"):
        hub.download_models(folder, layout="ckpt")


def test_importing_the_core_does_not_import_huggingface_hub():
    code = ("import sys, liveportrait_core.weights, liveportrait_core.hub, liveportrait_core.models;"
            "print('huggingface_hub' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_DIR, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "False"


def test_download_animal_sets(monkeypatch, weights_st, weights_pth, tmp_path):
    folder = str(tmp_path / "st")
    calls = _fake_hub(monkeypatch, weights_st)
    hub.download_models(folder, animal=True, progress=False)
    names = [c[1] for c in calls]
    assert names[:4] == [f"animal/{n}.safetensors" for n in BASE_NETWORKS]
    assert "stitching_retargeting_module.safetensors" in names  # animals use the human file
    assert hub.missing_files(folder, animal=True) == []
    f = locate_weights(os.path.join(folder, "animal"))
    assert f.variant == "animal" and f.stitching == os.path.join(folder, "stitching_retargeting_module.safetensors")
    folder = str(tmp_path / "pth")
    calls = _fake_hub(monkeypatch, weights_pth)
    hub.download_models(folder, layout="pth", animal=True)
    assert {c[0] for c in calls} == {"KwaiVGI/LivePortrait"}
    assert hub.missing_files(folder, animal=True) == []
    f = locate_weights(os.path.join(folder, "liveportrait_animals"))
    assert f.base_dir.endswith(os.path.join("liveportrait_animals", "base_models_v1.1"))
    assert f.stitching.endswith(os.path.join("liveportrait", "retargeting_models",
                                             "stitching_retargeting_module.pth"))
