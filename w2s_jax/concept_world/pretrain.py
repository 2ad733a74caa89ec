"""Pre-training a decoder on the concept world with ``w2s_jax.train``.

Every document is one SFT row whose prompt is empty (the row starts at ``<s>``) and whose
completion is the document, so the loss is next-token cross-entropy on every document token: the
ordinary language-modelling objective, run by the project's trainer (resumable through its orbax
checkpoints). The model is our ``Transformer`` with a Llama-family ``ModelConfig``, saved with
``save_pretrained`` next to the world's tokenizer, so it loads like any checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from w2s_jax.concept_world.world import BOS_ID, EOS_ID, PAD_ID, World, save_tokenizer


@dataclasses.dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """A decoder's shape and its pre-training budget (the ``[strong]`` table; ``steps``: one chunk)."""

    hidden_size: int = 64  # model width D
    num_layers: int = 2  # decoder blocks
    num_heads: int = 4  # attention heads (head width D / heads)
    steps: int = 2500  # Adam steps
    batch_size: int = 32  # documents per step
    learning_rate: float = 3e-3  # peak learning rate (cosine decay to 10%)
    warmup_steps: int = 50  # linear warmup
    documents: int = 32768  # distinct pre-training documents (cycled through in epochs)
    seed: int = 0  # initial weights and data order
    checkpoint_every: int = 250  # orbax checkpoints, so an interrupted pre-training resumes

    def __post_init__(self):
        for name in ("hidden_size", "num_layers", "num_heads", "steps", "batch_size", "documents"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"hidden_size = {self.hidden_size} must split into num_heads = {self.num_heads} "
                             "heads of even width")
        if not self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps = {self.warmup_steps} must be < steps = {self.steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")

    def model_config(self, world: World):
        """The Llama-family ``ModelConfig`` of this decoder for ``world``'s vocabulary."""
        from w2s_jax.models import ModelConfig

        c = world.config
        max_len = 4 * c.pairs_per_document + 8
        return ModelConfig(model_type="llama", vocab_size=len(world.vocabulary()),
                           hidden_size=self.hidden_size, num_layers=self.num_layers,
                           num_heads=self.num_heads, num_kv_heads=self.num_heads,
                           head_dim=self.hidden_size // self.num_heads,
                           intermediate_size=4 * self.hidden_size, max_position_embeddings=max(max_len, 128),
                           bos_token_id=BOS_ID, eos_token_ids=(EOS_ID,), pad_token_id=PAD_ID)

    def train_config(self, world: World):
        """The ``TrainConfig`` of the pre-training run on ``world``'s documents."""
        from w2s_jax.train import TrainConfig

        return TrainConfig(learning_rate=self.learning_rate, warmup_steps=self.warmup_steps,
                           total_steps=self.steps, batch_size=self.batch_size,
                           max_len=document_max_len(world), seed=self.seed,
                           checkpoint_every=self.checkpoint_every, max_checkpoints=1)


def document_max_len(world: World) -> int:
    """Tokens in a document row: ``<s>``, four words per pair, ``</s>``."""
    return 4 * world.config.pairs_per_document + 2


def pretrain(world: World, config: PretrainConfig, out_dir: str | Path, *, checkpoint_dir: str | Path,
             stream: int, identity: dict | None = None, show_progress: bool = False,
             init_from: str | Path | None = None, chunk: int = 0) -> dict:
    """Pre-trains a fresh decoder on ``world`` and saves it (weights, config, tokenizer) in ``out_dir``.

    Arguments:
      world: the concept world.
      config: the decoder's shape and budget.
      out_dir: the checkpoint directory written.
      checkpoint_dir: the trainer's resumable checkpoints.
      stream: which stream of documents to draw (models pre-trained on different streams see
        different documents of the same world).
      identity: extra fields identifying the run to the trainer's resume check.
      init_from: a checkpoint to continue from (the previous chunk of a chunked pre-training;
        None: fresh weights); its optimizer state is not carried over (a warm restart).
      chunk: the chunk's index, which changes the order the documents are read in.
    Returns:
      ``{"steps", "first_loss", "last_loss"}``.
    """
    from flax import nnx

    from w2s_jax.models import Transformer, load_tokenizer, save_pretrained
    from w2s_jax.train import CrossEntropyToTokens, SFTDataset, train

    save_tokenizer(world, out_dir)
    tokenizer = load_tokenizer(out_dir)
    model_config = config.model_config(world)
    if init_from is None:
        model = Transformer(model_config, rngs=nnx.Rngs(config.seed))
    else:
        from w2s_jax.pipeline.models import load_model

        model, _ = load_model(str(init_from))
    rows = [{"prompt": "", "completion": doc}
            for doc in world.sample_documents(config.documents, stream=stream)]
    train_config = config.train_config(world)
    data = SFTDataset(rows, tokenizer, max_len=train_config.max_len, pad_id=PAD_ID, seed=config.seed + 7919 * chunk)
    result = train(model, data, config=train_config, loss_fn=CrossEntropyToTokens(),
                   checkpoint_dir=checkpoint_dir, identity=identity, show_progress=show_progress)
    save_pretrained(model, model_config, out_dir)
    losses = result.train_losses
    return {"steps": result.step, "first_loss": losses[min(losses)] if losses else None,
            "last_loss": losses[max(losses)] if losses else None}

