"""In-context refinement of weak labels in the concept world's classification form.

The world has no yes/no tokens, so the strong decoder is not asked whether an item is right; it is
shown what the weak model calls right. For a half-B item ``Question: x / Answer: y``, the
demonstrations are ``demos`` half-B items the weak model labels positive (weak p > 1/2), with
distinct inputs other than x, drawn from the item's own generator (so chunking changes nothing):
a document of the target concept's pairs as the weak model sees them, in the pre-training format.
After the demonstrations the query ``Question: x / Answer:`` is asked, and the refined soft label
is the decoder's next-token probability of y among the world's outputs,

    p_refined(item) = p(y | demos, x) / sum_{y'} p(y' | demos, x),

the probability that the concept the demonstrations show gives y at x. A weak model whose
positives are mostly the target's outputs (and partly the rival's: a misaligned labeller) yields
demonstrations from which the decoder's posterior concentrates on the target concept (docs/theory.md,
Proposition 4.3), so the rival's outputs get little probability; a weak model whose positives
are mostly the rival's makes the refinement snap to the rival instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from w2s_jax.classify.stages_data import Items
from w2s_jax.concept_world.world import World, WorldConfig, document
from w2s_jax.pipeline import ChunkedStage, Stage
from w2s_jax.pipeline.refs import Model, label_field
from w2s_jax.tasks.demonstrations import query


def parse_item(world: World, text: str) -> tuple[int, int]:
    """``(x, y)`` of an item ``Question: x<i>\\nAnswer: y<j>`` (and the query that may follow it);
    ValueError naming it otherwise."""
    words = text.split()[:4]
    if len(words) != 4 or words[0] != "Question:" or words[2] != "Answer:" or world.parse_output(words[3]) is None:
        raise ValueError(f"{text!r} is not a concept-world item 'Question: x<i>\\nAnswer: y<j>'")
    return world.parse_input(words[1]), world.parse_output(words[3])


def refinement_demos(stage_key: str, index: int, x: int, pool: list[tuple[int, int]], demos: int) -> list[int]:
    """Positions in ``pool`` (``(x, y)`` pairs of the weak positives) of the ``demos`` pairs shown
    before item ``index`` whose input is ``x``: inputs distinct and never ``x``, in the order of
    the item's own draw."""
    rng = np.random.default_rng([int(stage_key[:8], 16), index])
    chosen, inputs = [], {x}
    for p in rng.permutation(len(pool)):
        if pool[p][0] not in inputs:
            chosen.append(int(p))
            inputs.add(pool[p][0])
            if len(chosen) == demos:
                break
    return chosen


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class ConceptRefine(ChunkedStage):
    """Half B's weak labels refined in context by the strong decoder (see the module docstring).
    Records ``{"index", "prob", "demos"}``: the refined p(class 1) and the half-B indices of the
    demonstrations it saw."""

    base: Model  # the strong decoder (a language model)
    items: Items
    weak: Stage  # soft labels of half B
    world: WorldConfig
    demos: int
    batch_size: int = label_field(default=16)

    @property
    def slug(self) -> str:
        return "icl-refine.concept"

    def models(self) -> list[str]:
        return [self.base.path]

    def units(self, res):
        return list(range(len(self.items.items(res.store, "b"))))

    def prompts(self, store, units) -> tuple[list[str], list[int], list[list[int]]]:
        """Each unit's prompt, its item's output y, and the half-B indices of its demonstrations."""
        world = World(self.world)
        items = self.items.items(store, "b")
        weak = self.weak.soft_labels(store)
        pairs = [parse_item(world, item["text"]) for item in items]
        positive = [u for u, item in enumerate(items) if weak[item["index"]] > 0.5]
        pool = [pairs[u] for u in positive]
        prompts, outputs, shown = [], [], []
        for u in units:
            x, y = pairs[u]
            chosen = refinement_demos(self.key, items[u]["index"], x, pool, self.demos)
            context = document(world, [pool[p][0] for p in chosen], [pool[p][1] for p in chosen])
            prompts.append(f"{context}\n\n{query(world.input_token(x))}" if chosen else query(world.input_token(x)))
            outputs.append(y)
            shown.append([items[positive[p]]["index"] for p in chosen])
        return prompts, outputs, shown

    def process(self, res, units):
        from w2s_jax.classify.stages_strong import strong_model
        from w2s_jax.inference.binary import label_token_probs

        items = self.items.items(res.store, "b")
        prompts, outputs, shown = self.prompts(res.store, units)
        model, tokenizer = strong_model(res, self.base, "float32")
        world = World(self.world)
        answers = [f" {world.output_token(y)}" for y in range(self.world.num_outputs)]
        probs_NxY = label_token_probs(model, tokenizer, prompts, label_texts=answers, batch_size=self.batch_size,
                                      mesh=res.mesh, show_progress=False)
        return [[{"index": items[u]["index"], "prob": float(p[y]), "demos": d}]
                for u, p, y, d in zip(units, np.asarray(probs_NxY), outputs, shown)]

    def soft_labels(self, store) -> dict[int, float]:
        return {r["index"]: r["prob"] for r in self.records(store)}

    def summarize(self, records):
        return f"{len(records)} refined labels"
