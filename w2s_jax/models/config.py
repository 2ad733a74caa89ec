"""Model configuration: one frozen dataclass for every supported decoder family.

The families (Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma 2) share one parametric decoder; their
differences are the flags below. `config_from_hf` reads a Hugging Face `config.json` in both the
transformers-4 layout (`rope_theta`, `rope_scaling`) and the transformers-5 layout
(`rope_parameters`) and refuses anything it would otherwise have to ignore silently.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2")
ROPE_TYPES = ("default", "linear", "llama3")
ACTIVATIONS = ("silu", "gelu", "gelu_pytorch_tanh")
NORM_STYLES = ("llama", "gemma")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture of a decoder-only transformer LM (all families)."""

    model_type: str = "llama"  # Hugging Face family name, one of MODEL_TYPES
    vocab_size: int  # number of token ids V
    hidden_size: int  # model width D
    num_layers: int  # decoder blocks L
    num_heads: int  # query heads N
    num_kv_heads: int  # key/value heads K (N % K == 0, GQA)
    head_dim: int  # per-head width H (may differ from D / N)
    intermediate_size: int  # feed-forward width F
    rms_norm_eps: float = 1e-6  # epsilon inside every RMSNorm
    hidden_act: str = "silu"  # gate activation, one of ACTIVATIONS
    rope_theta: float = 10_000.0  # RoPE base wavelength
    rope_type: str = "default"  # one of ROPE_TYPES
    rope_factor: float = 1.0  # linear / llama3 frequency scaling factor
    rope_low_freq_factor: float = 1.0  # llama3 only
    rope_high_freq_factor: float = 4.0  # llama3 only
    rope_original_max_positions: int = 8192  # llama3 only: pretraining context length
    max_position_embeddings: int = 2048  # informational; written back on export
    qkv_bias: bool = False  # bias on the q/k/v projections (Qwen2, Llama attention_bias)
    o_bias: bool = False  # bias on the output projection (Llama attention_bias)
    mlp_bias: bool = False  # bias on gate/up/down projections (Llama mlp_bias)
    qk_norm: bool = False  # per-head RMSNorm on queries and keys before RoPE (Qwen3)
    norm_style: str = "llama"  # "llama": w * norm(x); "gemma": (1 + w) * norm(x) in float32
    embed_scale: bool = False  # multiply embeddings by sqrt(D) in the activation dtype (Gemma)
    sandwich_norms: bool = False  # post-attention + pre/post feed-forward norms (Gemma 2)
    query_pre_attn_scalar: float | None = None  # attention scale = this ** -0.5 (else H ** -0.5)
    attn_logit_softcap: float | None = None  # c * tanh(s / c) on attention scores (Gemma 2)
    final_logit_softcap: float | None = None  # c * tanh(z / c) on output logits (Gemma 2)
    sliding_window: int | None = None  # keys with slot <= query slot - W are hidden
    sliding_layers: tuple[int, ...] = ()  # indices of the layers that use sliding_window
    tie_word_embeddings: bool = False  # output projection = embedding matrix transposed
    bos_token_id: int | None = None  # beginning-of-sequence id
    eos_token_ids: tuple[int, ...] = ()  # end-of-sequence ids (any of them ends generation)
    pad_token_id: int | None = None  # padding id

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type={self.model_type!r} is not supported; use one of {MODEL_TYPES}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive int")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for RoPE")
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_type={self.rope_type!r} is not supported; use one of {ROPE_TYPES}")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; use one of {ACTIVATIONS}")
        if self.norm_style not in NORM_STYLES:
            raise ValueError(f"norm_style={self.norm_style!r} is not supported; use one of {NORM_STYLES}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps={self.rms_norm_eps!r} must be > 0")
        if not self.rope_theta > 0 or not self.rope_factor > 0:
            raise ValueError(f"rope_theta={self.rope_theta!r} and rope_factor={self.rope_factor!r} must be > 0")
        if self.rope_type == "llama3" and not self.rope_high_freq_factor > self.rope_low_freq_factor:
            raise ValueError(
                f"rope_high_freq_factor={self.rope_high_freq_factor} must exceed "
                f"rope_low_freq_factor={self.rope_low_freq_factor}")
        for name in ("attn_logit_softcap", "final_logit_softcap", "query_pre_attn_scalar"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name}={value!r} must be None or > 0")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"sliding_window={self.sliding_window!r} must be None or a positive int")
        if self.sliding_layers and self.sliding_window is None:
            raise ValueError(f"sliding_layers={self.sliding_layers} given but sliding_window is None")
        bad = [i for i in self.sliding_layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"sliding_layers contains {bad}, outside range(num_layers={self.num_layers})")
        if not isinstance(self.eos_token_ids, tuple):
            raise ValueError(f"eos_token_ids={self.eos_token_ids!r} must be a tuple of ints")

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of layer `layer`, or None for full causal attention."""
        return self.sliding_window if layer in self.sliding_layers else None

    @property
    def attn_scale(self) -> float:
        """Multiplier applied to q.k scores."""
        scalar = self.query_pre_attn_scalar if self.query_pre_attn_scalar is not None else self.head_dim
        return scalar ** -0.5

    @classmethod
    def tiny(cls, model_type: str = "llama", **overrides: Any) -> "ModelConfig":
        """A tiny valid config of the given family (GQA 4/2 heads, 2 layers, width 32)."""
        base = dict(model_type=model_type, vocab_size=128, hidden_size=32, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=8, intermediate_size=64, bos_token_id=1, eos_token_ids=(2,),
                    pad_token_id=0)
        base.update(_FAMILY_FLAGS.get(model_type, {}))
        if model_type == "gemma2":
            base.update(sliding_window=4, sliding_layers=(0,), query_pre_attn_scalar=8.0,
                        attn_logit_softcap=50.0, final_logit_softcap=30.0)
        base.update(overrides)
        return cls(**base)


# Flags that are fixed by the family (not read from config.json).
_FAMILY_FLAGS: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {},
    "qwen2": dict(qkv_bias=True),
    "qwen3": dict(qk_norm=True),
    "gemma": dict(norm_style="gemma", embed_scale=True, hidden_act="gelu_pytorch_tanh"),
    "gemma2": dict(norm_style="gemma", embed_scale=True, sandwich_norms=True, hidden_act="gelu_pytorch_tanh"),
}

# transformers' head_dim default when config.json omits it (else hidden_size // num_heads).
_DEFAULT_HEAD_DIM = {"gemma": 256, "gemma2": 256, "qwen3": 128}


def _rope_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings from either `rope_parameters` (v5) or `rope_theta` + `rope_scaling` (v4)."""
    params = dict(hf.get("rope_parameters") or {})
    if params and all(isinstance(v, dict) for v in params.values()):
        raise ValueError(f"rope_parameters per layer type {sorted(params)} is not supported")
    params.update(hf.get("rope_scaling") or {})
    theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope_type={rope_type!r} (rope_parameters/rope_scaling) is not supported; "
                         f"use one of {ROPE_TYPES}")
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError(f"partial_rotary_factor={params['partial_rotary_factor']!r} is not supported")
    out: dict[str, Any] = dict(rope_theta=float(theta), rope_type=rope_type)
    if rope_type in ("linear", "llama3"):
        out["rope_factor"] = float(params["factor"])
    if rope_type == "llama3":
        out.update(rope_low_freq_factor=float(params["low_freq_factor"]),
                   rope_high_freq_factor=float(params["high_freq_factor"]),
                   rope_original_max_positions=int(params.get(
                       "original_max_position_embeddings", hf.get("max_position_embeddings", 8192))))
    return out


def _sliding_fields(hf: dict[str, Any], model_type: str, num_layers: int) -> dict[str, Any]:
    window = hf.get("sliding_window")
    if model_type in ("qwen2", "qwen3") and not hf.get("use_sliding_window", False):
        window = None
    if model_type in ("llama", "gemma"):
        window = None
    if window is None:
        return {}
    layer_types = hf.get("layer_types")
    if model_type == "mistral":
        if layer_types is not None:
            raise ValueError("mistral config with layer_types is not supported (use a Ministral loader)")
        layers = tuple(range(num_layers))
    elif layer_types is not None:
        unknown = set(layer_types) - {"full_attention", "sliding_attention"}
        if unknown:
            raise ValueError(f"layer_types contains unsupported {sorted(unknown)}")
        layers = tuple(i for i, t in enumerate(layer_types) if t == "sliding_attention")
    elif model_type == "gemma2":
        layers = tuple(range(0, num_layers, 2))
    else:
        first = int(hf.get("max_window_layers", 28))
        layers = tuple(range(first, num_layers))
    return dict(sliding_window=int(window), sliding_layers=layers) if layers else {}


def _activation(hf: dict[str, Any], model_type: str) -> str:
    act = hf.get("hidden_activation") if model_type == "gemma2" else hf.get("hidden_act")
    if act is None:
        act = "gelu_pytorch_tanh" if model_type in ("gemma", "gemma2") else "silu"
    if model_type == "gemma" and act == "gelu":
        act = "gelu_pytorch_tanh"  # transformers maps Gemma's legacy "gelu" to the tanh form
    if act not in ACTIVATIONS:
        raise ValueError(f"hidden_act={act!r} is not supported; use one of {ACTIVATIONS}")
    return act


def config_from_hf(path_or_dict: str | Path | dict[str, Any]) -> ModelConfig:
    """Parse a Hugging Face `config.json` (a dict, the file, or its directory) into a ModelConfig.

    Raises ValueError naming the field for an unknown `model_type`, an unsupported option (rope
    type, activation, bidirectional attention, per-layer rope) or a missing or mistyped field, and
    naming the file too when given one (also when it is not valid JSON); FileNotFoundError if absent.
    """
    if isinstance(path_or_dict, dict):
        return _parse_hf(dict(path_or_dict))
    path = Path(path_or_dict)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"config.json not found: {path}")
    try:
        hf = json.loads(path.read_text())
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: holds a JSON {type(hf).__name__}, not an object of config fields")
    try:
        return _parse_hf(hf)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _parse_hf(hf: dict[str, Any]) -> ModelConfig:
    """The ModelConfig of a config.json dict; ValueError names a missing or unusable field."""
    try:
        return _parse_hf_fields(hf)
    except KeyError as error:
        raise ValueError(f"required field {error.args[0]!r} is missing") from None
    except TypeError as error:  # e.g. int(None) or int([..]) for a mistyped field
        raise ValueError(f"a field has the wrong type ({error})") from None


def _required_int(hf: dict[str, Any], name: str) -> int:
    """`hf[name]` as a positive int (an integral float such as 4096.0 is accepted)."""
    if name not in hf:
        raise ValueError(f"required field {name!r} is missing")
    value = hf[name]
    if isinstance(value, bool) or not (isinstance(value, int)
                                       or isinstance(value, float) and value.is_integer()) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return int(value)


def _parse_hf_fields(hf: dict[str, Any]) -> ModelConfig:
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r} is not supported; use one of {MODEL_TYPES}")
    if hf.get("use_bidirectional_attention"):
        raise ValueError("use_bidirectional_attention=True is not supported")
    if hf.get("pretraining_tp", 1) not in (1, None):
        raise ValueError(f"pretraining_tp={hf['pretraining_tp']!r} is not supported")
    num_heads = _required_int(hf, "num_attention_heads")
    hidden = _required_int(hf, "hidden_size")
    num_layers = _required_int(hf, "num_hidden_layers")
    head_dim = int(hf.get("head_dim") or _DEFAULT_HEAD_DIM.get(model_type) or hidden // num_heads)
    eos = hf.get("eos_token_id")
    eos_ids = tuple(int(e) for e in eos) if isinstance(eos, list | tuple) else (() if eos is None else (int(eos),))
    fields: dict[str, Any] = dict(
        model_type=model_type, vocab_size=_required_int(hf, "vocab_size"), hidden_size=hidden, num_layers=num_layers,
        num_heads=num_heads, num_kv_heads=int(hf.get("num_key_value_heads") or num_heads), head_dim=head_dim,
        intermediate_size=_required_int(hf, "intermediate_size"), rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", model_type in ("gemma", "gemma2"))),
        bos_token_id=hf.get("bos_token_id"), eos_token_ids=eos_ids, pad_token_id=hf.get("pad_token_id"),
    )
    fields.update(_FAMILY_FLAGS[model_type])
    fields["hidden_act"] = _activation(hf, model_type)
    fields.update(_rope_fields(hf))
    fields.update(_sliding_fields(hf, model_type, num_layers))
    if model_type in ("llama", "qwen3", "gemma", "gemma2") and hf.get("attention_bias", False):
        fields.update(qkv_bias=True, o_bias=True)
    if model_type == "llama" and hf.get("mlp_bias", False):
        fields["mlp_bias"] = True
    if model_type == "gemma2":
        fields.update(query_pre_attn_scalar=float(hf.get("query_pre_attn_scalar", 256)),
                      attn_logit_softcap=hf.get("attn_logit_softcapping", 50.0),
                      final_logit_softcap=hf.get("final_logit_softcapping", 30.0))
    return ModelConfig(**fields)


_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM", "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM"}


def _int_if_integral(x: float | None) -> float | int | None:
    return int(x) if x is not None and float(x).is_integer() else x  # transformers types it as int


def config_to_hf(config: ModelConfig, *, dtype_name: str = "float32") -> dict[str, Any]:
    """The Hugging Face (transformers-5 layout) `config.json` dict for `config`."""
    c = config
    rope: dict[str, Any] = {"rope_type": c.rope_type, "rope_theta": c.rope_theta}
    if c.rope_type in ("linear", "llama3"):
        rope["factor"] = c.rope_factor
    if c.rope_type == "llama3":
        rope.update(low_freq_factor=c.rope_low_freq_factor, high_freq_factor=c.rope_high_freq_factor,
                    original_max_position_embeddings=c.rope_original_max_positions)
    eos = list(c.eos_token_ids) if len(c.eos_token_ids) != 1 else c.eos_token_ids[0]
    hf: dict[str, Any] = dict(
        architectures=[_ARCHITECTURES[c.model_type]], model_type=c.model_type, vocab_size=c.vocab_size,
        hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim, intermediate_size=c.intermediate_size,
        rms_norm_eps=c.rms_norm_eps, max_position_embeddings=c.max_position_embeddings,
        rope_parameters=rope, tie_word_embeddings=c.tie_word_embeddings, bos_token_id=c.bos_token_id,
        eos_token_id=eos if c.eos_token_ids else None, pad_token_id=c.pad_token_id, dtype=dtype_name,
    )
    hf["hidden_activation" if c.model_type == "gemma2" else "hidden_act"] = c.hidden_act
    if c.model_type in ("llama", "qwen3", "gemma", "gemma2"):
        hf["attention_bias"] = c.qkv_bias
    if c.model_type == "llama":
        hf["mlp_bias"] = c.mlp_bias
    layer_types = ["sliding_attention" if i in c.sliding_layers else "full_attention"
                   for i in range(c.num_layers)]
    if c.model_type == "mistral":
        hf["sliding_window"] = c.sliding_window
    elif c.model_type in ("qwen2", "qwen3"):
        hf.update(use_sliding_window=c.sliding_window is not None, sliding_window=c.sliding_window,
                  max_window_layers=min(c.sliding_layers, default=c.num_layers), layer_types=layer_types)
    elif c.model_type == "gemma2":
        hf.update(sliding_window=c.sliding_window, layer_types=layer_types,
                  query_pre_attn_scalar=_int_if_integral(c.query_pre_attn_scalar),
                  attn_logit_softcapping=c.attn_logit_softcap, final_logit_softcapping=c.final_logit_softcap)
    return hf
