"""What each platform runs: one frozen decision per backend (CPU, GPU, TPU), read by every branch.

The model code was tuned on XLA:CPU, where some choices pay (optimization barriers around slices
and transposes, weights read through a `lax.switch` over layers, a prefill in chunks whose
attention reads the written cache in blocks under a data-dependent loop) and others cost nothing.
On an accelerator the same choices hurt: a conditional's branch index is read on the host on
XLA:GPU (outside a CUDA graph), a `lax.cond` inside a `scan` is a known GPU slowdown, a switch
repeats each dot per branch on a TPU, and a data-dependent loop is a host round-trip per
iteration. So each platform gets its own :class:`Backend`, and the model and inference code ask
it, never `jax.default_backend()`.

The decision belongs to the model (`Transformer.backend`, a static attribute: part of the graph
definition every jitted function keys its cache on), set from the devices its arrays are placed
on when it is built or loaded (`for_devices`). A model lowered for another platform from this host
(`jit(f).trace(...).lower(lowering_platforms=("cuda",))`) is given that platform's decision
with `set_backend(model, "cuda")`. Inside a model call the decision is *active*
(`use_backend`), so that the building blocks (`matmul`, `dense`, the attention) read it without
an argument threaded through every layer. docs/benchmarks.md has the measurements behind the
CPU choices; nothing here has been timed on an accelerator.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterable, Iterator

import jax

PLATFORMS = ("cpu", "gpu", "tpu")
_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu", "rocm": "gpu", "tpu": "tpu"}


@dataclasses.dataclass(frozen=True)
class Backend:
    """What one platform runs for training, scoring, prefill and decoding."""

    platform: str  # "cpu", "gpu" or "tpu"
    layout: str  # inference weight layout load_pretrained picks: "per_layer" (switch) or "stacked"
    decode_cache: str  # KV cache layout a decode step reads: "per_layer" (switch) or "stacked" (scan slice)
    prefill: str  # "chunked": a traced number of chunks, cached attention in blocks; "whole": one static pass
    last_slot_only: bool  # prefill's last layer forms its output for the last slot alone (a lax.cond per layer)
    attention: str  # "grouped": rank-4 batched matmuls tuned for XLA:CPU; "fused": jax.nn.dot_product_attention
    fused_implementation: str | None  # 16-bit fused attention: "cudnn", "splash" (TPU kernel) or None (XLA)
    barriers: bool  # XLA:CPU's optimization barriers (bf16 slices, gathers, transposes kept apart)
    weight_major: bool  # a product of 2-32 rows puts the weight first (XLA:CPU's dot kernels)
    pad_single_row: bool  # a one-row 16-bit product is padded to two rows (XLA:CPU's fast 16-bit path)
    max_streams: int | None  # batches in flight at once (None: no limit; threads on the host's cores)
    host_memory: bool  # `host_memory.reuse_freed_host_memory` applies (XLA:CPU's scratch comes from malloc)

    def __post_init__(self):
        if self.platform not in PLATFORMS:
            raise ValueError(f"platform={self.platform!r}: use one of {PLATFORMS}")
        for name, allowed in (("layout", ("per_layer", "stacked")), ("decode_cache", ("per_layer", "stacked")),
                              ("prefill", ("chunked", "whole")), ("attention", ("grouped", "fused"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}: use one of {allowed}")

    @property
    def conditional_free(self) -> bool:
        """Whether the per-token programs hold no conditionals and no data-dependent loops."""
        return (self.layout == "stacked" and self.decode_cache == "stacked" and self.prefill == "whole"
                and not self.last_slot_only)


CPU = Backend(platform="cpu", layout="per_layer", decode_cache="per_layer", prefill="chunked",
              last_slot_only=True, attention="grouped", fused_implementation=None, barriers=True,
              weight_major=True, pad_single_row=True, max_streams=None, host_memory=True)
GPU = Backend(platform="gpu", layout="stacked", decode_cache="stacked", prefill="whole", last_slot_only=False,
              attention="fused", fused_implementation="cudnn", barriers=False, weight_major=False,
              pad_single_row=False, max_streams=1, host_memory=False)
TPU = dataclasses.replace(GPU, platform="tpu", fused_implementation="splash")
_BY_PLATFORM = {"cpu": CPU, "gpu": GPU, "tpu": TPU}


def for_platform(platform: str | Backend) -> Backend:
    """The decision for a platform name ("cpu", "gpu", "cuda", "rocm", "tpu"), or `platform` itself."""
    if isinstance(platform, Backend):
        return platform
    name = _ALIASES.get(str(platform).lower())
    if name is None:
        raise ValueError(f"platform {platform!r} is not one of {sorted(_ALIASES)}")
    return _BY_PLATFORM[name]


def for_devices(devices: Iterable[jax.Device] | None = None) -> Backend:
    """The decision for the devices a model's arrays live on (None: the default device, where
    new arrays are placed). Devices of more than one platform are refused."""
    devices = list(devices) if devices is not None else jax.devices()[:1]
    platforms = {for_platform(d.platform).platform for d in devices}
    if len(platforms) != 1:
        raise ValueError(f"arrays on devices of several platforms {sorted(platforms)}: place the model on one")
    return _BY_PLATFORM[platforms.pop()]


def for_mesh(mesh) -> Backend:
    """The decision for a `jax.sharding.Mesh`'s devices, or the default device without one."""
    return for_devices(None if mesh is None else mesh.devices.flat)


_ACTIVE: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("w2s_backend", default=None)


@contextlib.contextmanager
def use_backend(backend: Backend | str) -> Iterator[Backend]:
    """Make `backend` the decision the building blocks read while tracing inside this block."""
    token = _ACTIVE.set(for_platform(backend))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def active() -> Backend:
    """The decision of the model being traced (`use_backend`); outside a model call (a building
    block used on its own), that of the default device."""
    backend = _ACTIVE.get()
    return for_devices() if backend is None else backend


def set_backend(model, backend: Backend | str) -> None:
    """Give `model` (a `Transformer`) the decision for `backend`, in place: to lower it for another
    platform than the one its arrays live on. Refuses per-layer weights on a stacked backend
    (convert them first: `to_layout(model, "stacked")`)."""
    backend = for_platform(backend)
    from w2s_jax.models.layer_weights import is_per_layer

    if backend.layout == "stacked" and is_per_layer(model):
        raise ValueError(f"the {backend.platform} backend reads stacked weights, but this model's are per layer; "
                         "call `w2s_jax.models.to_layout(model, 'stacked')` first")
    model.backend = backend
