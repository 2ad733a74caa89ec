"""The concept world: a transformer model organism where the theory's premise holds exactly.

K latent concepts map input tokens to output tokens; a small Llama-family decoder is pre-trained
on documents of (x, y) pairs from one concept each (with label noise), in the pipeline's
demonstration format, and the weak-to-strong pipeline runs on it next to the exact Bayes-optimal
posterior. ``w2s run experiments/concept_world.toml`` (``kind = "concept-world"``) runs it all.

Modules: ``world`` (generator, tokenizer), ``bayes`` (exact posterior, Chernoff rate),
``pretrain`` (pre-training through ``w2s_jax.train``), ``gate`` (the pre-training gate against the
Bayes-optimal in-context curve), ``labellers`` (controlled weak labellers), ``sampling`` (fresh or
fixed demonstrations), ``config`` (the experiment file), ``stages`` (setup and sweep stages),
``sweeps``, ``clusters`` (two-stage bootstrap over worlds and seeds), ``predictions`` (P1-P5),
``report``, ``figures``, ``experiment`` (the ``w2s run`` entry point).
"""
