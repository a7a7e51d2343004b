"""One sealing scheme (a file's sidecar, a folder's seals.json: the same records, checked by the same
code, refused with the same errors) and one settings check."""
import json

import pytest

from vild_d2.artifacts import (
    CorruptArtifactError,
    SettingsMismatchError,
    check_settings,
    folder_problems,
    seal,
    seal_folder,
    seal_record,
    verify_file,
    verify_folder,
    write_settings,
)


def _files(folder):
    folder.mkdir()
    for name, data in (("a.bin", b"alpha" * 100), ("b.bin", b"beta" * 100)):
        (folder / name).write_bytes(data)
    return folder


def test_a_sidecar_and_a_folder_hold_the_same_records(tmp_path):
    folder = _files(tmp_path / "f")
    seal(folder / "a.bin")
    records = seal_folder(folder, ["a.bin", "b.bin"])
    assert json.loads((folder / "a.bin.sha256").read_text()) == records["a.bin"] == seal_record(folder / "a.bin")
    assert json.loads((folder / "seals.json").read_text()) == records and set(records["b.bin"]) == {"sha256", "size"}
    verify_file(folder / "a.bin")
    verify_folder(folder)
    assert folder_problems(folder) == [] and folder_problems(folder, records) == []


def test_a_damaged_file_fails_both_seals_with_the_same_words(tmp_path):
    folder = _files(tmp_path / "f")
    seal(folder / "a.bin")
    seal_folder(folder, ["a.bin", "b.bin"])
    (folder / "a.bin").write_bytes(b"alpha" * 99)  # truncated
    (folder / "b.bin").write_bytes(b"BETA" + b"beta" * 99)  # same size, other bytes
    with pytest.raises(CorruptArtifactError, match=r"data \S+a.bin is incomplete or altered \(495 bytes, sealed at "
                       r"500\) \(its seal: a.bin.sha256\): delete it and rerun"):
        verify_file(folder / "a.bin", "data")
    assert folder_problems(folder) == ["a.bin is incomplete or altered (495 bytes, sealed at 500)",
                                       "b.bin is altered (its sha256 differs from its seal; 400 bytes)"]
    with pytest.raises(CorruptArtifactError, match=r"shard \S+/f fails verification: a.bin is incomplete .*; b.bin is "
                       r"altered .*\. Fix: rebuild it"):
        verify_folder(folder, "shard", "rebuild it")
    (folder / "b.bin").unlink()
    assert folder_problems(folder)[1] == "b.bin is missing"
    (folder / "seals.json").write_text("{trunc")
    assert folder_problems(folder)[0].startswith("seals.json unreadable (seals ")
    assert folder_problems(tmp_path / "nowhere") == ["folder missing"]


def test_settings_are_recorded_then_matched_or_refused(tmp_path):
    root = tmp_path / "data"
    wanted = {"seed": 1, "scales": (1.0, 1.5), "size": 8}
    assert check_settings(root, wanted, "a test world") is False  # nothing there: build it
    write_settings(root, wanted)
    assert check_settings(root, wanted, "a test world") is True  # tuples compare as the lists read back
    with pytest.raises(SettingsMismatchError, match=r"\S+/data holds a test world built with other settings \(seed: "
                       r"1 there, 2 asked; size: 8 there, 9 asked\): use another folder, or delete \S+/data to build "
                       "it anew"):
        check_settings(root, dict(wanted, seed=2, size=9), "a test world")
    with pytest.raises(SettingsMismatchError, match=r"\(recorded but not asked: \['size'\]\): start over"):
        check_settings(root, {"seed": 1, "scales": [1.0, 1.5]}, "a test world", "start over")
    assert isinstance(SettingsMismatchError("x"), ValueError)


def test_data_without_a_settings_record_is_refused(tmp_path):
    record, model = tmp_path / "model.json", tmp_path / "model.pt"
    model.write_bytes(b"someone's")
    with pytest.raises(SettingsMismatchError, match=r"model.pt is there, but not \S+model.json, the settings record "
                       "of a model: it was not written by a build of a model; refusing to overwrite it: pick a path"):
        check_settings(record, {"seed": 0}, "a model", "pick a path", others=[model])
    assert check_settings(record, {"seed": 0}, "a model", others=[tmp_path / "absent.pt"]) is False
