"""Expression presets: versioned JSON round trip, and every kind of bad file rejected with a
message naming the file and the key, nothing written when saving fails."""
from __future__ import annotations

import json
import os

import pytest
import torch

from liveportrait_core.editing import CONTROLS, load_preset, preset_from_json, preset_to_json, save_preset
from liveportrait_core.errors import InputError, LivePortraitError


def write(path, doc) -> str:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def good(**controls) -> dict:
    return {"format": "liveportrait-expression", "version": 1, "controls": controls}


def test_round_trip_keeps_values_exactly(tmp_path):
    values = {"smile": 0.6, "head_yaw": -12.5, "eyebrow": -7.25, "move_z": 1.05, "eye_open_ratio": 0.31,
              "wink": torch.tensor(13.0)}
    path = save_preset(values, str(tmp_path / "happy.json"), name="happy")
    assert path == str(tmp_path / "happy.json")
    doc = json.loads((tmp_path / "happy.json").read_text())
    assert doc["format"] == "liveportrait-expression" and doc["version"] == 1 and doc["name"] == "happy"
    assert list(doc["controls"]) == [k for k in CONTROLS if k in values]  # table order
    loaded = load_preset(path)
    assert loaded == {k: float(v) for k, v in values.items()}
    assert all(type(v) is float for v in loaded.values())
    # every control at its extremes survives too
    for end in ("minimum", "maximum"):
        values = {k: getattr(c, end) for k, c in CONTROLS.items()}
        assert load_preset(save_preset(values, str(tmp_path / f"{end}.json"))) == values
    assert preset_from_json(preset_to_json({"smile": 1.0})) == {"smile": 1.0}
    assert load_preset(write(tmp_path / "empty.json", good())) == {}


@pytest.mark.parametrize("doc,words", [
    ("{\"format\": ", ["not valid JSON", "line 1"]),
    ("[1, 2]", ["JSON object"]),
    (json.dumps({"version": 1, "controls": {}}), ["'format'"]),
    (json.dumps({"format": "liveportrait-keyframes", "version": 1, "controls": {}}), ["'format'", "liveportrait-keyframes"]),
    (json.dumps({"format": "liveportrait-expression", "version": 2, "controls": {}}), ["version 2", "update"]),
    (json.dumps({"format": "liveportrait-expression", "version": "1", "controls": {}}), ["'version'"]),
    (json.dumps({"format": "liveportrait-expression", "version": 1}), ["'controls'"]),
    (json.dumps({"format": "liveportrait-expression", "version": 1, "controls": [1]}), ["'controls'"]),
    (json.dumps({**good(), "colour": "red"}), ["unknown key 'colour'"]),
    (json.dumps({**good(), "name": 3}), ["'name'"]),
    (json.dumps(good(smiles=1.0)), ["unknown control 'smiles'"]),
    (json.dumps(good(smile=9.0)), ["'smile'", "between -0.3 and 1.3", "got 9"]),
    (json.dumps(good(head_yaw=-25.5)), ["'head_yaw'", "-25", "deg"]),
    ('{"format": "liveportrait-expression", "version": 1, "controls": {"smile": NaN}}', ["'smile'", "finite"]),
    ('{"format": "liveportrait-expression", "version": 1, "controls": {"wink": Infinity}}', ["'wink'", "finite"]),
    (json.dumps(good(smile="0.5")), ["'smile'", "number", "\"0.5\""]),
    (json.dumps(good(smile=True)), ["'smile'", "number"]),
    (json.dumps(good(smile=[0.1, 0.2])), ["'smile'", "number"]),
    ('{"format": "liveportrait-expression", "version": 1, "controls": {"smile": 0.1, "smile": 0.2}}',
     ["'smile'", "twice"]),
])
def test_bad_presets_name_file_and_key(tmp_path, doc, words):
    path = write(tmp_path / "bad.json", doc)
    with pytest.raises(InputError) as e:
        load_preset(path)
    msg = str(e.value)
    assert msg.startswith(path + ": ") or path in msg, msg
    for w in words:
        assert w in msg, (w, msg)
    assert isinstance(e.value, LivePortraitError)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_preset(str(tmp_path / "missing.json"))
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="UTF-8"):
        load_preset(str(tmp_path / "bin.json"))
    (tmp_path / "huge.json").write_bytes(b" " * (2 << 20))
    with pytest.raises(InputError, match="too large"):
        load_preset(str(tmp_path / "huge.json"))
    with pytest.raises(InputError):
        load_preset(str(tmp_path))  # a folder


def test_nothing_written_when_saving_fails(tmp_path):
    target = tmp_path / "p.json"
    target.write_text("previous content")
    for values in ({"smile": 5.0}, {"unknown": 1.0}, {"smile": float("nan")}, {"smile": torch.tensor([0.1, 0.2])}):
        with pytest.raises(InputError):
            save_preset(values, str(target))
        assert target.read_text() == "previous content"
    with pytest.raises(InputError, match="does not exist"):
        save_preset({"smile": 1.0}, str(tmp_path / "no" / "p.json"))
    assert sorted(os.listdir(tmp_path)) == ["p.json"]  # no temporary files left
    save_preset({"smile": 1.0}, str(target))  # a complete file replaces the old one
    assert load_preset(str(target)) == {"smile": 1.0} and sorted(os.listdir(tmp_path)) == ["p.json"]
