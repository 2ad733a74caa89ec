"""The fine-tuning configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

import dataclasses

COMPUTE_DTYPES = ("float32", "bfloat16")
REMAT_CHOICES = ("auto", "none", "full", "dots")  # "full", "dots": `Transformer` remat policies


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Every knob of a supervised fine-tuning run. Build variants with `dataclasses.replace`."""

    learning_rate: float = 1e-5  # peak learning rate after warmup
    warmup_steps: int = 100  # linear warmup from 0 to learning_rate
    total_steps: int = 1000  # optimizer steps; cosine decay ends here
    end_lr_ratio: float = 0.1  # final learning rate / peak learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    adam_b1: float = 0.9  # AdamW first-moment decay
    adam_b2: float = 0.999  # AdamW second-moment decay
    grad_clip_norm: float | None = 1.0  # global-norm clipping; None = no clipping
    batch_size: int = 8  # rows per optimizer step (all micro-batches together)
    grad_accum_steps: int = 1  # micro-batches per optimizer step; divides batch_size
    max_len: int = 512  # tokens per row after left-padding (prompt truncated on the left)
    compute_dtype: str = "float32"  # "float32" or "bfloat16"; trained weights stay float32
    remat: str = "auto"  # recompute layers in the backward pass: "full", "dots", "none"; "auto": "full" off CPU
    eval_every: int = 0  # evaluate every this many steps (0 = only at the end)
    checkpoint_every: int = 0  # checkpoint every this many steps (0 = only at the end)
    max_checkpoints: int = 2  # checkpoints kept on disk
    seed: int = 0  # data order and the run's PRNG key
    lora_rank: int | None = None  # LoRA rank; None = full fine-tuning
    lora_alpha: float = 16.0  # LoRA scale is lora_alpha / lora_rank
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")  # projection attribute names to adapt

    def __post_init__(self):
        def positive(name, allow_zero=False):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if allow_zero else 1):
                kind = "a non-negative" if allow_zero else "a positive"
                raise ValueError(f"TrainConfig.{name} must be {kind} int, got {value!r}")

        for name in ("total_steps", "batch_size", "grad_accum_steps", "max_len", "max_checkpoints"):
            positive(name)
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            positive(name, allow_zero=True)
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"TrainConfig.warmup_steps={self.warmup_steps} must be < "
                f"total_steps={self.total_steps}"
            )
        if not 0.0 <= self.end_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.end_lr_ratio must be in [0, 1], got {self.end_lr_ratio!r}")
        if self.weight_decay < 0:
            raise ValueError(f"TrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            raise ValueError(
                f"TrainConfig.grad_clip_norm must be > 0 or None, got {self.grad_clip_norm!r}"
            )
        if self.batch_size % self.grad_accum_steps != 0:
            raise ValueError(
                f"TrainConfig.batch_size={self.batch_size} is not divisible by "
                f"grad_accum_steps={self.grad_accum_steps}"
            )
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"TrainConfig.compute_dtype must be one of {COMPUTE_DTYPES}, "
                f"got {self.compute_dtype!r}"
            )
        if self.remat not in REMAT_CHOICES:
            raise ValueError(f"TrainConfig.remat must be one of {REMAT_CHOICES}, got {self.remat!r}")
        if self.lora_rank is not None:
            positive("lora_rank")
            if not self.lora_targets:
                raise ValueError("TrainConfig.lora_targets is empty but lora_rank is set")

    @classmethod
    def tiny(cls) -> TrainConfig:
        """A few float32 steps on tiny batches, for tests."""
        return cls(
            learning_rate=1e-2,
            warmup_steps=1,
            total_steps=6,
            batch_size=8,
            max_len=16,
            grad_clip_norm=1.0,
        )

    def remat_policy(self, platform: str) -> str | None:
        """The `Transformer` remat policy for a step that runs on `platform` ("cpu", "gpu", "tpu"...).

        "auto" recomputes each layer ("full") on accelerators, whose memory holds the activations
        of every layer otherwise, and nothing on the CPU, whose memory is the host's.
        """
        if self.remat == "auto":
            return None if platform == "cpu" else "full"
        return None if self.remat == "none" else self.remat

    @property
    def lora_scale(self) -> float:
        """alpha / rank, the factor on the low-rank update."""
        if self.lora_rank is None:
            raise ValueError("lora_scale is undefined for full fine-tuning (lora_rank=None)")
        return self.lora_alpha / self.lora_rank
