"""Inference for w2s-jax language models: sampling strategies, batched generation, scoring.

    generate(model, tokenizer, prompts, *, max_new_tokens, sampler, key) -> GenerationResult
    score(model, tokenizer, prompts, completions, *, batch_size) -> list[ScoreResult]
    completion_logprobs(model, tokens_BxT, valid_BxT, completion_mask_BxT) -> logprobs_BxT
    next_token_topk(model, prompt_ids, completion_ids, k) -> list[TopKResult]
    Engine(model, tokenizer, chat=...).generate(prompts, ...) / .score(prompts, completions)
        / .next_token_topk(prompts, completions, k)
    last_token_features(model, tokenizer, texts, *, batch_size, max_len) -> features_NxD
    classifier_probs(classifier, tokenizer, texts, *, batch_size, max_len) -> probs_NxC
    label_token_probs(model, tokenizer, prompts, *, label_texts=(" No", " Yes")) -> probs_NxC

generate, score, next_token_topk and the Engine take ``streams=``: batches in flight at once, each on a
thread (default 2 on a CPU with two or more cores, else 1; results never depend on it; `streams.py`).
"""

from w2s_jax.inference.engine import Engine, Prompt, as_prompt
from w2s_jax.inference.generation import GenerationResult, generate
from w2s_jax.inference.sampling import (
    Greedy,
    Sampler,
    Temperature,
    TopK,
    TopP,
    example_keys,
    make_sampler,
    top_k_filter,
    top_p_filter,
)
from w2s_jax.inference.scoring import ScoreResult, completion_logprobs, score, token_logprobs
from w2s_jax.inference.topk import TopKResult, next_token_topk, next_token_topk_arrays
from w2s_jax.inference.features import classifier_probs, last_token_features
from w2s_jax.inference.binary import label_token_logprobs, label_token_probs

__all__ = [
    "Engine",
    "Prompt",
    "as_prompt",
    "GenerationResult",
    "Greedy",
    "Sampler",
    "ScoreResult",
    "Temperature",
    "TopK",
    "TopKResult",
    "TopP",
    "completion_logprobs",
    "example_keys",
    "generate",
    "make_sampler",
    "next_token_topk",
    "next_token_topk_arrays",
    "score",
    "token_logprobs",
    "top_k_filter",
    "top_p_filter",
    "classifier_probs",
    "last_token_features",
    "label_token_logprobs",
    "label_token_probs",
]
