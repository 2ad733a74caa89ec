"""A sequence classifier: a linear head on the decoder's last-token hidden state.

The head reads the final-norm hidden state and maps it to C class logits, z = h W + b, with W
(D x C) and b (C) initialised at zero, so an untrained classifier predicts the uniform
distribution (Burns et al. 2023, and EleutherAI's w2s, start their score heads at zero). It is
`transformers`' `<Family>ForSequenceClassification` with a bias: the same score on the same
hidden state (`tests/lm/test_classifier.py` checks the logits against it).

To the trainer a classifier is a language model whose vocabulary is its C classes: `hidden` is
the backbone's, `unembed` applies the final norm and the head at every position (`B x T x C`
float32), so `w2s_jax.train.train` runs it unchanged and a loss reads the last position, where a
left-padded batch holds each example's last token. The head's parameters are `HeadParam`s: an
`nnx.Param` that is also an `nnx.LoRAParam`, so full fine-tuning and LoRA runs (which train
`nnx.LoRAParam` alone) both train the head.

A text is read as BOS and its tokens, the last `max_len` of them (`classification_tokens`): the
end of the text, where the head reads, is kept. A classifier is saved beside its backbone's
Hugging Face files as `classifier_head.safetensors` (`save_classifier`), holding `score.weight`
(C x D, the `transformers` layout) and `score.bias` (C). `load_classifier` reads that, and also
a transformers `<Family>ForSequenceClassification` checkpoint as it is (its `score.weight`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from w2s_jax.models.backend import use_backend
from w2s_jax.models.checkpoint import load_backbone, save_pretrained
from w2s_jax.models.hub import resolve_checkpoint_dir
from w2s_jax.models.layers import dense
from w2s_jax.models.safetensors_format import SafetensorsFile, write_safetensors
from w2s_jax.models.transformer import Transformer

HEAD_FILE = "classifier_head.safetensors"
HEAD_NAMES = ("score.weight", "score.bias")  # transformers' name for the weight; ours for the bias


def classification_tokens(tokenizer, text: str, *, max_len: int, add_bos: bool = True,
                          what: str = "text") -> list[int]:
    """The token ids a classifier reads for `text`: BOS (if the tokenizer has one and `add_bos`)
    and the text's tokens, the last `max_len` of them. ValueError naming `what` when the text is
    not a string or gives no tokens."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a str, got {type(text).__name__} {text!r:.60}")
    ids = [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]
    if not ids:
        raise ValueError(f"{what} gives no tokens ({text!r:.60}): nothing to classify")
    if add_bos and tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id)] + ids
    return ids[-max_len:]


class HeadParam(nnx.LoRAParam):
    """A classification head's parameter: trained by full fine-tuning (an `nnx.Param`) and by
    LoRA runs (an `nnx.LoRAParam`)."""


class Classifier(nnx.Module):
    """`backbone` (a `Transformer`) with a zero-initialised linear head of `num_classes` logits."""

    def __init__(self, backbone: Transformer, *, num_classes: int = 2, rngs: nnx.Rngs | None = None):
        """rngs: unused (the head starts at zero), accepted so the classifier is built like
        every other module."""
        del rngs
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        D = backbone.config.hidden_size
        self.backbone = backbone
        self.num_classes = num_classes
        self.score_kernel = HeadParam(jnp.zeros((D, num_classes), jnp.float32), logical_axes=("embed", None))
        self.score_bias = HeadParam(jnp.zeros((num_classes,), jnp.float32), logical_axes=(None,))

    # What the trainer, the sharding and the backend code read from a model, answered by the backbone.
    @property
    def config(self):
        return self.backbone.config

    @property
    def backend(self):
        return self.backbone.backend

    @backend.setter
    def backend(self, value):  # `models.set_backend`
        self.backbone.backend = value

    @property
    def remat(self):
        return self.backbone.remat

    @remat.setter
    def remat(self, value):  # `train.compute.computing_in`
        self.backbone.remat = value

    def placed_on(self, mesh, rules=None) -> None:
        """Called by `w2s_jax.parallel.shard_model` after placing the weights on `mesh` under
        `rules`: the backbone's `Transformer.placed_on`."""
        self.backbone.placed_on(mesh, rules)

    def hidden(self, tokens_BxT: jax.Array, *, positions_BxT: jax.Array, valid_BxT: jax.Array, cache=None,
               last_only: bool = False, fresh: bool = False):
        """The backbone's last-layer output `B x T x D` (before the final norm) and cache:
        `Transformer.hidden`."""
        return self.backbone.hidden(tokens_BxT, positions_BxT=positions_BxT, valid_BxT=valid_BxT, cache=cache,
                                    last_only=last_only, fresh=fresh)

    def features(self, h_BxTxD: jax.Array) -> jax.Array:
        """The final-norm hidden states the head reads (`... x D`, the activation dtype)."""
        with use_backend(self.backend):
            return self.backbone.final_norm(h_BxTxD)

    def unembed(self, h_BxTxD: jax.Array) -> jax.Array:
        """Class logits `... x C`, float32, at every position of hidden states `... x D`: the
        final norm, then `h W + b` (the product in the activation dtype, as the LM head's)."""
        f_BxTxD = self.features(h_BxTxD)
        with use_backend(self.backend):
            logits = dense(f_BxTxD, self.score_kernel[...].astype(f_BxTxD.dtype))
        return logits.astype(jnp.float32) + self.score_bias[...].astype(jnp.float32)

    def __call__(self, tokens_BxT: jax.Array, *, positions_BxT: jax.Array, valid_BxT: jax.Array) -> jax.Array:
        """Class logits `B x C` (float32) of the last position: each row's last token when the
        batch is left-padded."""
        h_BxTxD, _ = self.hidden(tokens_BxT, positions_BxT=positions_BxT, valid_BxT=valid_BxT)
        return self.unembed(h_BxTxD[:, -1])


def save_classifier(model: Classifier, out_dir: str | Path) -> Path:
    """Write the backbone (`save_pretrained`: `model.safetensors` + `config.json`) and the head
    (`classifier_head.safetensors`) into `out_dir`; returns it. Merge a LoRA-trained classifier's
    adapters into its weights first (`w2s_jax.train.merge_lora`): `save_pretrained` refuses them."""
    out_dir = save_pretrained(model.backbone, model.config, out_dir)
    kernel = np.asarray(jax.device_get(model.score_kernel.get_value()), np.float32)
    bias = np.asarray(jax.device_get(model.score_bias.get_value()), np.float32)
    write_safetensors(out_dir / HEAD_FILE, [(HEAD_NAMES[0], np.ascontiguousarray(kernel.T)), (HEAD_NAMES[1], bias)])
    return out_dir


def _read_head(path: Path, hidden_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(kernel D x C, bias C) float32 from a head file; ValueError naming the file when it is not one."""
    f = SafetensorsFile(path)
    names = set(f.names())
    if names != set(HEAD_NAMES):
        raise ValueError(f"{path}: expected exactly the tensors {list(HEAD_NAMES)}, found {sorted(names)}")
    weight, bias = (np.asarray(f.get(name), np.float32) for name in HEAD_NAMES)
    if weight.ndim != 2 or weight.shape[1] != hidden_size or weight.shape[0] < 2 or bias.shape != weight.shape[:1]:
        raise ValueError(f"{path}: score.weight {weight.shape} and score.bias {bias.shape} do not form a head "
                         f"(C x {hidden_size} and C, C >= 2) for this backbone's hidden size {hidden_size}")
    return np.ascontiguousarray(weight.T), bias


def load_classifier(path_or_hub_name: str | Path, *, num_classes: int | None = None, dtype=jnp.float32,
                    param_dtype=None, mesh=None, rules=None, layout: str | None = None) -> Classifier:
    """A `Classifier` on a Hugging Face checkpoint (its backbone through `load_backbone`, with the
    same `dtype`, `param_dtype`, `mesh`, `rules` and `layout` as `load_pretrained`), with its head:

    - a causal LM's checkpoint: the head saved beside it (`classifier_head.safetensors`, float32)
      or, without one, a new zero head of `num_classes` (default 2);
    - a transformers sequence classifier's (`<Family>ForSequenceClassification`, e.g. a
      fine-tuned classifier saved with `save_pretrained`): its `score.weight` as the kernel and a
      zero bias (transformers' score has none), `num_classes` its `num_labels`. Its decoder has no
      LM head of its own (`load_backbone`).

    Raises ValueError when the head has another number of classes than `num_classes` or fewer
    than 2 (a one-label reward model's score is not a classifier's), or is not a head for this
    backbone; and whatever `load_pretrained` raises.
    """
    backbone, config, score = load_backbone(path_or_hub_name, dtype=dtype, param_dtype=param_dtype, mesh=mesh,
                                            rules=rules, layout=layout)
    ckpt_dir = resolve_checkpoint_dir(path_or_hub_name)
    head_path = ckpt_dir / HEAD_FILE
    if score is not None:
        if head_path.is_file():
            raise ValueError(f"{ckpt_dir} holds both a sequence classifier's score.weight and {HEAD_FILE}: "
                             "which head is meant is ambiguous")
        head, where = (np.ascontiguousarray(score.T), np.zeros(len(score), np.float32)), f"{ckpt_dir}'s score.weight"
        if len(score) < 2:
            raise ValueError(f"{where} has {len(score)} label(s) (num_labels in config.json): a classifier needs "
                             ">= 2 classes")
    else:
        head = _read_head(head_path, config.hidden_size) if head_path.is_file() else None
        where = head_path
    saved_classes = None if head is None else head[1].shape[0]
    if num_classes is not None and saved_classes is not None and num_classes != saved_classes:
        raise ValueError(f"{where} holds a head of {saved_classes} classes, but num_classes={num_classes}")
    model = Classifier(backbone, num_classes=num_classes or saved_classes or 2)
    if head is not None:
        model.score_kernel.set_value(jnp.asarray(head[0]))
        model.score_bias.set_value(jnp.asarray(head[1]))
    if mesh is not None:
        from w2s_jax.parallel import variable_sharding

        for variable in (model.score_kernel, model.score_bias):
            variable.set_value(jax.device_put(variable.get_value(), variable_sharding(variable, mesh, rules)))
    return model
