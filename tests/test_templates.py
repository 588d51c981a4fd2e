"""Motion files: the real reference templates, exact round trips (.pkl and ours), refusal of
unsafe pickles (nothing executed), clear errors for damaged or foreign files."""
from __future__ import annotations

import io
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from conftest import DATA_DIR, compact_file
from liveportrait_core.compose import ComposeOptions, MissingRatiosError, compose
from liveportrait_core.errors import LivePortraitError, MotionFileError
from liveportrait_core.motion import Motion
from liveportrait_core.templates import MOTION_EXTENSION, load_motion, save_motion

# name → (frames, fps, rotation key, has ratio lists)
REAL = {"d1": (16, 30.0, "R_d", True), "laugh": (54, 25.0, "R", False),
        "open_lip": (77, 25.0, "R", False), "wink": (57, 25.0, "R", False)}
FIELDS = ("pitch", "yaw", "roll", "R", "exp", "t", "scale", "kp", "eye_ratio", "lip_ratio",
          "face_id", "frame_index")


def real_path(name: str) -> str:
    p = os.path.join(DATA_DIR, "templates", f"{name}.pkl")
    return p if os.path.exists(p) else compact_file(f"motion_templates/{name}.pkl")


def assert_same(a: Motion, b: Motion, fields=FIELDS) -> None:
    for k in fields:
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None), k
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), k
    assert a.fps == b.fps


def globals_of(data: bytes) -> set:
    """(module, name) pairs a pickle references (our own files: recorded while loading them)."""
    seen = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()
    return seen


def full_motion(n=5, faces=False) -> Motion:
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g)
    return Motion.from_degrees(r(n) * 20, r(n) * 20, r(n) * 20, r(n, 21, 3) * 0.01, r(n, 3) * 0.1,
                               r(n, 1).abs() + 1, kp=r(n, 21, 3) * 0.3, eye_ratio=r(n, 2).abs(),
                               lip_ratio=r(n, 1).abs(), fps=29.97,
                               face_id=torch.tensor([0, 1] * (n // 2) + [0] * (n % 2)) if faces else None,
                               frame_index=torch.arange(n) // 2 if faces else None)


# ----------------------------------------------------------------------------- real templates


@pytest.mark.parametrize("name", sorted(REAL))
def test_load_real_template(name):
    n, fps, rot_key, has_ratios = REAL[name]
    m = load_motion(real_path(name))
    with open(real_path(name), "rb") as f:
        raw = pickle.load(f)  # trusted reference files: compare with an unrestricted read
    assert len(m) == n and m.fps == fps and m.kp is None
    assert rot_key in raw["motion"][0]
    assert np.array_equal(m.R.numpy(), np.stack([fr[rot_key][0] for fr in raw["motion"]]))
    for k in ("exp", "t", "scale"):
        assert np.array_equal(getattr(m, k).numpy(), np.stack([fr[k][0] for fr in raw["motion"]])), k
    if has_ratios:
        assert np.array_equal(m.eye_ratio.numpy(), np.concatenate(raw["c_d_eyes_lst"]))
        assert np.array_equal(m.lip_ratio.numpy(), np.concatenate(raw["c_d_lip_lst"]))
    else:
        assert m.eye_ratio is None and m.lip_ratio is None
    # degrees derived from R rebuild R
    rebuilt = m.with_pose()
    assert torch.allclose(rebuilt.R, m.R, atol=2e-6)
    assert all(t.dtype == torch.float32 for t in (m.pitch, m.R, m.exp, m.t, m.scale))


@pytest.mark.parametrize("name", sorted(REAL))
def test_pkl_round_trip_real(name, tmp_path):
    m = load_motion(real_path(name))
    out = str(tmp_path / f"{name}.pkl")
    assert save_motion(m, out) == out
    assert_same(load_motion(out), m)
    with open(out, "rb") as f:
        data = f.read()
    assert data[:2] == b"\x80\x04"  # protocol 4
    assert globals_of(data) <= {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}
    raw = pickle.loads(data)
    n, fps, _, has_ratios = REAL[name]
    assert type(raw["n_frames"]) is int and raw["n_frames"] == n
    assert type(raw["output_fps"]) is int and raw["output_fps"] == int(fps)
    f0 = raw["motion"][0]
    assert set(f0) == {"scale", "R", "exp", "t"}  # no kp / x_s when unknown
    shapes = {"scale": (1, 1), "R": (1, 3, 3), "exp": (1, 21, 3), "t": (1, 3)}
    for k, shape in shapes.items():
        assert type(f0[k]) is np.ndarray and f0[k].dtype == np.float32 and f0[k].shape == shape
    assert ("c_eyes_lst" in raw) == has_ratios and ("c_lip_lst" in raw) == has_ratios
    if has_ratios:
        assert raw["c_eyes_lst"][0].shape == (1, 2) and raw["c_lip_lst"][0].shape == (1, 1)


@pytest.mark.parametrize("name", sorted(REAL))
def test_own_format_round_trip_real(name, tmp_path):
    m = load_motion(real_path(name))
    out = str(tmp_path / f"{name}{MOTION_EXTENSION}")
    save_motion(m, out)
    assert_same(load_motion(out), m)


def test_pkl_with_keypoints_and_float_fps(tmp_path):
    m = full_motion(4)
    out = str(tmp_path / "full.pkl")
    save_motion(m, out)
    raw = pickle.loads(open(out, "rb").read())
    assert set(raw["motion"][0]) == {"scale", "R", "exp", "t", "kp", "x_s"}
    x_s = np.concatenate([f["x_s"] for f in raw["motion"]])
    assert np.array_equal(x_s, m.keypoints().numpy())
    assert raw["output_fps"] == 29.97  # non-integer fps kept as a plain float
    back = load_motion(out)
    assert_same(back, m, fields=("R", "exp", "t", "scale", "kp", "eye_ratio", "lip_ratio"))
    assert torch.allclose(back.pitch, m.pitch, atol=1e-3) and torch.allclose(back.roll, m.roll, atol=1e-3)


def test_own_format_round_trips_everything(tmp_path):
    m = full_motion(6, faces=True)
    out = str(tmp_path / f"multi{MOTION_EXTENSION}")
    save_motion(m, out)
    assert_same(load_motion(out), m)
    bare = Motion.from_degrees([1.0], [2.0], [3.0], torch.zeros(1, 21, 3), torch.zeros(1, 3), [[1.0]], fps=12.5)
    save_motion(bare, out)  # replaces the previous file
    back = load_motion(out)
    assert_same(back, bare)
    assert back.kp is None and back.eye_ratio is None and back.face_id is None


def test_save_refusals_leave_existing_file(tmp_path):
    out = tmp_path / "keep.pkl"
    out.write_bytes(b"precious")
    with pytest.raises(MotionFileError, match="one face"):
        save_motion(full_motion(4, faces=True), str(out))
    with pytest.raises(MotionFileError, match="unknown motion file type"):
        save_motion(full_motion(2), str(tmp_path / "x.json"))
    with pytest.raises(MotionFileError, match="does not exist"):
        save_motion(full_motion(2), str(tmp_path / "no" / "x.pkl"))
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pkl"]  # no temp files left


# ----------------------------------------------------------------------------- unsafe pickles


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _OpenPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _EvalPayload(_Payload):
    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


def _template_with(payload) -> dict:
    z = np.zeros
    return {"n_frames": 1, "output_fps": 25, "c_eyes_lst": [payload],
            "motion": [{"scale": z((1, 1), np.float32), "R": np.eye(3, dtype=np.float32)[None],
                        "exp": z((1, 21, 3), np.float32), "t": z((1, 3), np.float32)}]}


@pytest.mark.parametrize("kind", ["system", "open", "nested", "protocol0", "eval"])
def test_malicious_pickle_refused_and_not_run(kind, tmp_path):
    marker = tmp_path / "PWNED"
    if kind == "system":
        data = pickle.dumps(_Payload(marker), protocol=4)
    elif kind == "open":
        data = pickle.dumps(_OpenPayload(marker), protocol=2)
    elif kind == "nested":  # a valid-looking template carrying the payload deep inside
        data = pickle.dumps(_template_with(_Payload(marker)), protocol=4)
    elif kind == "protocol0":
        data = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    else:
        data = pickle.dumps(_EvalPayload(marker), protocol=4)
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(MotionFileError, match="refused"):
        load_motion(str(path))
    assert not marker.exists()


def test_numpy_object_arrays_refused(tmp_path):
    tpl = _template_with(np.array([[0.3, 0.3]], dtype=np.float32))
    tpl["motion"][0]["exp"] = np.array([None] * 63, dtype=object).reshape(1, 21, 3)
    path = tmp_path / "obj.pkl"
    path.write_bytes(pickle.dumps(tpl, protocol=4))
    with pytest.raises(MotionFileError, match="object array"):
        load_motion(str(path))


def test_numpy_numbers_accepted(tmp_path):
    tpl = _template_with(np.array([[0.3, 0.2]], dtype=np.float32))
    tpl.update(n_frames=np.int64(1), output_fps=np.float64(24.0), c_lip_lst=[np.float32(0.1)])
    path = tmp_path / "np_numbers.pkl"
    path.write_bytes(pickle.dumps(tpl, protocol=4))
    m = load_motion(str(path))
    assert m.fps == 24.0 and len(m) == 1 and float(m.lip_ratio[0, 0]) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- damaged / foreign


def test_damaged_and_foreign_files(tmp_path):
    good = open(real_path("d1"), "rb").read()
    cases = {
        "truncated.pkl": good[: len(good) // 2],
        "garbage.pkl": bytes(range(256)) * 4,
        "empty.pkl": b"",
        "text.pkl": b"hello, not a template\n",
        "list.pkl": pickle.dumps([1, 2, 3], protocol=4),
        "nomotion.pkl": pickle.dumps({"n_frames": 1}, protocol=4),
        "badshape.pkl": pickle.dumps({**_template_with(None), "c_eyes_lst": [np.zeros((1, 2), np.float32)],
                                      "motion": [{"scale": np.zeros((1, 1), np.float32),
                                                  "R": np.zeros((1, 2, 2), np.float32),
                                                  "exp": np.zeros((1, 21, 3), np.float32),
                                                  "t": np.zeros((1, 3), np.float32)}]}, protocol=4),
        "toomany.pkl": pickle.dumps({**_template_with(None), "n_frames": 5, "c_eyes_lst": []}, protocol=4),
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(MotionFileError) as e:
            load_motion(str(p))
        assert str(p) in str(e.value) or name in str(e.value), name
    with pytest.raises(MotionFileError, match="not found"):
        load_motion(str(tmp_path / "missing.pkl"))


def test_damaged_own_format_and_weights_file(tmp_path):
    from safetensors.torch import save_file

    good = tmp_path / f"m{MOTION_EXTENSION}"
    save_motion(full_motion(3), str(good))
    data = good.read_bytes()
    bad = tmp_path / f"bad{MOTION_EXTENSION}"
    bad.write_bytes(data[: len(data) - 40])
    with pytest.raises(MotionFileError):
        load_motion(str(bad))
    weights = tmp_path / "model.safetensors"
    save_file({"mlp.0.weight": torch.zeros(2, 2)}, str(weights))
    with pytest.raises(MotionFileError, match="not a LivePortrait motion"):
        load_motion(str(weights))
    assert isinstance(MotionFileError("x"), LivePortraitError)


# ----------------------------------------------------------------------------- templates in compose


def test_template_without_ratios_animates_and_retargeting_is_a_clear_error():
    src = full_motion(1)
    drv = load_motion(real_path("wink"))
    plan = compose(src, drv, None, ComposeOptions())
    assert len(plan) == 57 and plan.fps == 25.0 and torch.isfinite(plan.x_d).all()
    import test_motion_math as tm

    with pytest.raises(MissingRatiosError, match="target_eye_ratio"):
        compose(src, drv, tm.mlps(), ComposeOptions(eye_retargeting=True))
    with pytest.raises(MotionFileError):  # also catchable as the motion-file error
        compose(src, drv, tm.mlps(), ComposeOptions(lip_retargeting=True))
    plan2 = compose(src, drv, tm.mlps(), ComposeOptions(eye_retargeting=True, target_eye_ratio=0.3))
    assert len(plan2) == 57 and torch.isfinite(plan2.x_d).all()


def test_copy_of_template_file_loads_identically(tmp_path):
    dst = tmp_path / "copy.PKL"
    shutil.copyfile(real_path("laugh"), dst)
    assert_same(load_motion(str(dst)), load_motion(real_path("laugh")))
    # content, not the extension, decides: a .pkl saved under another name still loads
    other = tmp_path / "laugh.bin"
    shutil.copyfile(real_path("laugh"), other)
    assert len(load_motion(str(other))) == 54
