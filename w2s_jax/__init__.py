"""w2s-jax: weak-to-strong generalization as latent-concept transfer, in JAX.

Importing ``w2s_jax`` (or ``w2s_jax.core``) does not import Flax; the language-model stack lives in
``w2s_jax.models``, ``w2s_jax.inference``, ``w2s_jax.train`` and ``w2s_jax.parallel``.
"""

__version__ = "0.1.0"
