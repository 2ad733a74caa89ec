"""Binary classification weak-to-strong (Burns et al. 2023) on the ``w2s run`` pipeline.

``kind = "classification"`` experiment files (:mod:`.config`) name a stored dataset
configuration (:mod:`.datasets`: SciQ, BoolQ, CosmosQA, Anthropic HH, Amazon polarity, or any
file with a text and a label field), weak and strong models, the students' losses, label repairs
and in-context refinement. The run is a graph of stages (:mod:`.graph`) in the shared store:
items and halves, weak models on half A and their soft labels of half B, strong ceilings, zero-shot
answers, cached features and probes, refined labels, students; then the report (:mod:`.report`)
with accuracy, AUC, ECE, agreement and PGR, intervals over items and over seeds, and figures.
A ``[concept_world]`` table makes the items and the models from the concept world instead
(:mod:`.concept`). docs/classification.md describes it.
"""

from w2s_jax.classify.config import ClassificationConfig, classification_from_dict, load_classification
from w2s_jax.classify.datasets import FORMATS, Format, FormatError, balance, dataset_format, to_items
from w2s_jax.classify.graph import classification_graph
from w2s_jax.classify.run import run_classification

__all__ = ["FORMATS", "ClassificationConfig", "Format", "FormatError", "balance", "classification_from_dict",
           "classification_graph", "dataset_format", "load_classification", "run_classification", "to_items"]
