"""Broken checkpoint files are refused when opened, with the file's path and what is wrong: the
safetensors header is checked against the file size, config.json and the shard index must be JSON."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from w2s_jax.models import ModelConfig, config_to_hf, load_pretrained
from w2s_jax.models.safetensors_format import SafetensorsError, SafetensorsFile, write_safetensors


def _raw(path, header, data: bytes = b""):
    """A file with an 8-byte header length, `header` (dict, or raw bytes) and `data`."""
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + data)
    return path


def _entry(dtype="F32", shape=(2, 3), offsets=(0, 24)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.fixture
def valid_file(tmp_path):
    path = tmp_path / "model.safetensors"
    write_safetensors(path, [("a", np.arange(6, dtype=np.float32).reshape(2, 3)),
                             ("b", np.ones(4, dtype=np.int64))])
    return path


def test_valid_file_opens_and_reads(valid_file):
    f = SafetensorsFile(valid_file)
    assert f.names() == ["a", "b"] and f.shape("a") == (2, 3)
    np.testing.assert_array_equal(f.get("a"), np.arange(6, dtype=np.float32).reshape(2, 3))


def _expect(path, message):
    with pytest.raises(SafetensorsError, match=message) as info:
        SafetensorsFile(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)
    assert len(str(info.value).splitlines()) == 1


def test_empty_file(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"")
    _expect(tmp_path / "x.safetensors", r"0 bytes, too short for the 8-byte header length")


def test_truncated_file(valid_file):
    data = valid_file.read_bytes()
    valid_file.write_bytes(data[:-8])  # the last tensor loses its final 8 bytes
    _expect(valid_file, r"tensor 'b' data_offsets \[24, 56\] lie outside the file: only 48 bytes")


def test_file_cut_inside_the_header(valid_file):
    valid_file.write_bytes(valid_file.read_bytes()[:20])
    _expect(valid_file, r"header length \d+ bytes is beyond the file size \(20 bytes\)")


def test_random_bytes(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    _expect(path, r"header length \d+ bytes is beyond the file size \(4096 bytes\)")


def test_header_length_beyond_file_size(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    _expect(path, r"header length 1000 bytes is beyond the file size \(10 bytes\)")


@pytest.mark.parametrize("header, message", [
    (b"not json", "header is not valid JSON"),
    (b"\xff\xfe{}", "header is not valid JSON"),
    (b"[1, 2]", "header is JSON list, not an object"),
    ({"a": {"dtype": "F32"}}, "tensor 'a' entry .* lacks dtype/shape/data_offsets"),
    ({"a": _entry(dtype="F4")}, "tensor 'a' has unknown dtype 'F4'"),
    ({"a": _entry(shape=(2, -3))}, r"tensor 'a' has shape \[2, -3\]"),
    ({"a": _entry(offsets=(24, 0))}, r"data_offsets \[24, 0\], not \[begin, end\]"),
    ({"a": _entry(offsets=(0, 20))}, r"\[0, 20\] \(20 bytes\), inconsistent with shape \[2, 3\] x F32"),
    ({"a": _entry(offsets=(8, 32))}, r"tensor 'a' data_offsets \[8, 32\] lie outside the file"),
])
def test_invalid_header(tmp_path, header, message):
    _expect(_raw(tmp_path / "x.safetensors", header, data=bytes(24)), message)


def test_metadata_is_not_a_tensor(tmp_path):
    path = _raw(tmp_path / "x.safetensors", {"__metadata__": {"format": "pt"}, "a": _entry()}, bytes(24))
    assert SafetensorsFile(path).names() == ["a"]


def _checkpoint_dir(tmp_path):
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config_to_hf(ModelConfig.tiny("llama"))))
    return path


def test_invalid_shard_index_is_named(tmp_path):
    path = _checkpoint_dir(tmp_path)
    (path / "model.safetensors.index.json").write_text('{"weight_map": {')
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: not valid JSON"):
        load_pretrained(path)


def test_shard_index_without_weight_map_is_named(tmp_path):
    path = _checkpoint_dir(tmp_path)
    (path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(ValueError, match=r"index\.json: no \"weight_map\" object"):
        load_pretrained(path)


def test_broken_weights_are_named_by_load_pretrained(tmp_path):
    path = _checkpoint_dir(tmp_path)
    (path / "model.safetensors").write_bytes(b"")
    with pytest.raises(SafetensorsError, match=r"model\.safetensors: not a valid safetensors file"):
        load_pretrained(path)
