"""Supervised fine-tuning (full or LoRA) with pluggable objectives, sharding and resumable runs.

Quick use::

    data = SFTDataset(rows, tokenizer, max_len=cfg.max_len)
    result = train(model, data, config=cfg, loss_fn=CrossEntropyToTokens(), checkpoint_dir="ckpt")
    merge_lora(model)  # LoRA runs: fold the adapters in before `save_pretrained`

A second `train` call on the same `checkpoint_dir` resumes only the same run (same initial
weights, data, config and loss); any other raises `CheckpointMismatchError`.
"""

from w2s_jax.train.binary_losses import (
    BINARY_LOSSES,
    AuxConfidence,
    EntropyRegularised,
    KLLoss,
    PerBatch,
    ProductLoss,
    RollingBuffer,
    SoftCrossEntropy,
    THRESHOLDS,
    StatefulLoss,
    WindowLoss,
    binary_loss,
)
from w2s_jax.train.checkpoint import Checkpointer
from w2s_jax.train.config import TrainConfig
from w2s_jax.train.data import SFTDataset
from w2s_jax.train.lora import LoRAWeight, apply_lora, merge_lora
from w2s_jax.train.losses import (
    CrossEntropyToTokens,
    KLToTeacher,
    LossFn,
    PositionwiseLoss,
    loss_from_hidden,
    next_token_mask,
)
from w2s_jax.train.run_identity import CheckpointMismatchError, weights_fingerprint
from w2s_jax.train.step import (
    EvalStep,
    LossState,
    TrainStep,
    accumulated_loss_and_grads,
    learning_rate_schedule,
    make_eval_step,
    make_optimizer,
    make_train_step,
    optimizer_transform,
    trainable_filter,
)
from w2s_jax.train.trainer import TrainResult, evaluate, train
from w2s_jax.train.classification_data import ClassificationDataset, classification_tokens

__all__ = [
    "BINARY_LOSSES",
    "AuxConfidence",
    "CheckpointMismatchError",
    "Checkpointer",
    "CrossEntropyToTokens",
    "EntropyRegularised",
    "EvalStep",
    "KLLoss",
    "KLToTeacher",
    "LoRAWeight",
    "LossFn",
    "LossState",
    "PerBatch",
    "PositionwiseLoss",
    "ProductLoss",
    "RollingBuffer",
    "SFTDataset",
    "SoftCrossEntropy",
    "StatefulLoss",
    "THRESHOLDS",
    "TrainConfig",
    "TrainResult",
    "TrainStep",
    "WindowLoss",
    "accumulated_loss_and_grads",
    "apply_lora",
    "binary_loss",
    "evaluate",
    "learning_rate_schedule",
    "loss_from_hidden",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "merge_lora",
    "next_token_mask",
    "optimizer_transform",
    "train",
    "trainable_filter",
    "weights_fingerprint",
    "ClassificationDataset",
    "classification_tokens",
]
