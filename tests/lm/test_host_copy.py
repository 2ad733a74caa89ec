"""The loader's host copies: tiled transposes (any shape, with and without a dtype change) equal
numpy's, conversions round like XLA's, and the buffers are adopted by JAX on the CPU without a
copy; a loaded checkpoint equals the HF tensors converted by `TensorMap.from_hf`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from tests.lm.hf_fixtures import make_hf_checkpoint
from w2s_jax.models import load_pretrained
from w2s_jax.models.checkpoint import _open_shards
from w2s_jax.models.convert import tensor_maps
from w2s_jax.models.host_copy import copy_into, host_buffer, transpose_into

BF16 = ml_dtypes.bfloat16


@pytest.mark.parametrize("shape", [(1, 1), (3, 700), (700, 3), (64, 256), (65, 257), (300, 1000)])
@pytest.mark.parametrize("src_dtype,dst_dtype", [(np.float32, np.float32), (BF16, BF16), (BF16, np.float32),
                                                 (np.float32, BF16), (np.float16, np.float32)])
def test_transpose_into_equals_numpy(shape, src_dtype, dst_dtype):
    src = np.random.default_rng(0).standard_normal(shape).astype(src_dtype)
    dst = np.full(shape[::-1], np.nan, dst_dtype)
    transpose_into(dst, src)
    np.testing.assert_array_equal(dst.astype(np.float32), src.T.astype(dst_dtype).astype(np.float32))


def test_transpose_into_a_strided_destination_writes_only_it():
    src = np.arange(300 * 70, dtype=np.float32).reshape(300, 70).astype(BF16)
    out = np.zeros((70, 600), np.float32)
    transpose_into(out[:, 100:400], src)
    np.testing.assert_array_equal(out[:, 100:400], src.T.astype(np.float32))
    assert not out[:, :100].any() and not out[:, 400:].any()


def test_transpose_into_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="does not fit"):
        transpose_into(np.empty((3, 4)), np.empty((3, 4)))


def test_float32_to_bfloat16_rounds_like_xla():
    src = np.random.default_rng(1).standard_normal((130, 300)).astype(np.float32) * 1e3
    ours = np.empty((300, 130), BF16)
    transpose_into(ours, src)
    xla = np.asarray(jnp.asarray(src).T.astype(jnp.bfloat16))
    np.testing.assert_array_equal(ours.view(np.uint16), xla.view(np.uint16))
    flat = np.empty(src.shape, BF16)
    copy_into(flat, src)
    np.testing.assert_array_equal(flat.view(np.uint16), np.asarray(jnp.asarray(src).astype(jnp.bfloat16)).view(np.uint16))


@pytest.mark.parametrize("shape", [(7,), (1024, 1024), (3, 5000)])
def test_host_buffer_is_adopted_by_jax_on_cpu(shape):
    buffer = host_buffer(shape, BF16)
    assert buffer.shape == shape and buffer.dtype == BF16 and buffer.ctypes.data % 64 == 0
    buffer[...] = 1
    array = jax.device_put(buffer)
    if jax.default_backend() == "cpu":  # the loaded parameter is this memory, not a second copy
        assert array.unsafe_buffer_pointer() == buffer.ctypes.data
    assert float(array.astype(jnp.float32).sum()) == buffer.size


def test_mesh_loading_gives_every_device_its_own_memory(tmp_path):
    from w2s_jax import parallel

    path = make_hf_checkpoint(tmp_path, "llama")
    mesh = parallel.make_mesh(parallel.MeshConfig(data=1, fsdp=4, tp=2))
    model, _ = load_pretrained(path, mesh=mesh, rules=parallel.ShardingRules.fsdp_tp(), layout="stacked")
    for path_, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        shards = variable.get_value().addressable_shards
        pointers = {shard.data.unsafe_buffer_pointer() for shard in shards}
        assert len(pointers) == len(shards), path_  # replicas do not share (donation would clobber them)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("family", ["qwen2", "qwen3"])  # q/k/v biases; q/k norms
def test_loaded_parameters_are_the_converted_hf_tensors(tmp_path, family, dtype):
    path = make_hf_checkpoint(tmp_path, family, sharded=True)
    model, config = load_pretrained(path, dtype=dtype, layout="stacked")
    params = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    tensors = _open_shards(path)
    for m in tensor_maps(config):
        ours = np.asarray(params[m.path].get_value())
        assert ours.dtype == np.dtype(dtype)
        ours = ours if m.layer is None else ours[m.layer]
        expected = m.from_hf(tensors[m.hf_name].get(m.hf_name)).astype(np.dtype(dtype))
        np.testing.assert_array_equal(ours.astype(np.float32), expected.astype(np.float32), err_msg=m.hf_name)
