"""The classification experiment file: every shipped one loads (without running) into a config
whose models are hub names or directories and whose losses exist; bad values are one clear error
naming the file and key; the graph has the stages the docs describe, keyed so that a changed
setting moves only what depends on it."""

from pathlib import Path

import pytest

from tests.classify.tiny_world import SHIPPED, tiny_config
from w2s_jax.classify import classification_graph, load_classification
from w2s_jax.cli_pipeline import shipped_experiments
from w2s_jax.pipeline import ExperimentError
from w2s_jax.pipeline.kind import kind_of_file

FILES = [p for p in shipped_experiments() if p.name.startswith("classification")]


def test_the_classic_pairs_and_the_tiny_run_are_shipped():
    names = {p.stem for p in FILES}
    assert {"classification_sciq_qwen", "classification_boolq_qwen", "classification_sweep_qwen",
            "classification_tiny"} <= names
    assert SHIPPED in FILES


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_shipped_classification_experiment_loads(path):
    from w2s_jax.pipeline.plan import _HUB_NAME
    from w2s_jax.train.binary_losses import BINARY_LOSSES

    kind = kind_of_file(path)
    assert kind.name == "classification"
    config = kind.load(path)
    if config.concept_world is None:  # (a concept-world file makes its own data and models)
        for model in (*config.models.weak, *config.models.strong):
            assert _HUB_NAME.match(model), model
        assert config.data.train == config.data.test == config.data.format.hub  # hub names, two splits
        assert config.data.train_split != config.data.test_split
    assert all(loss.name in BINARY_LOSSES for loss in config.losses)
    for loss in config.losses:
        assert loss.build(config.train.total_steps) is not None
    assert config.models.pairs()


def test_the_sweep_runs_every_pair_of_different_models():
    config = load_classification(Path(SHIPPED).with_name("classification_sweep_qwen.toml"))
    pairs = [(config.models.weak[w], config.models.strong[s]) for w, s in config.models.pairs()]
    assert len(pairs) == 5 and ("Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-1.5B") not in pairs


@pytest.mark.parametrize("override, message", [
    ("task.dataset=\"sciqq\"", "unknown dataset 'sciqq' (did you mean 'sciq'?)"),
    ("task.text_feild=\"x\"", "has no option 'text_feild'"),
    ("losses.run=[\"cross_entropyy\"]", "unknown loss 'cross_entropyy'"),
    ("losses.aux_confidence.warmup=0.1", "[losses.aux_confidence] has no option 'warmup'"),
    ("losses.aux_confidence.threshold=\"median\"", "threshold must be one of"),
    ("repair.knn.probe=\"svm\"", "probe must be one of"),
    ("repair.knn.mode=\"drop\"", "mode must be one of"),
    ("seeds=[0, 0]", "seeds must be a list of different ints"),
    ("task.weak_fraction=1.5", "task.weak_fraction must be in (0, 1)"),
    ("models.weak=[]", "models.weak must name at least one model"),
    ("train.learning_rate=-1.0", "learning_rate"),
    ("icl.demos=-1", "icl.demos must be an int >= 0"),
    ("strong_to_strong.rounds=-1", "strong_to_strong.rounds must be an int >= 0"),
    ("modles.weak=[\"x\"]", "unknown key 'modles' in the top level (did you mean 'models'?)"),
])
def test_a_bad_value_is_one_error_naming_the_file_and_key(override, message):
    with pytest.raises(ExperimentError) as error:
        load_classification(SHIPPED, overrides=[override])
    assert str(error.value).startswith(str(SHIPPED)) and message in str(error.value), str(error.value)


def test_auxiliary_loss_options_build_its_threshold_and_steps():
    from w2s_jax.train.binary_losses import AuxConfidence, RollingBuffer

    config = load_classification(SHIPPED, overrides=["losses.aux_confidence.threshold=\"rolling_buffer\"",
                                                     "losses.aux_confidence.buffer_size=7"])
    loss = config.losses[1].build(total_steps=40)
    assert loss == AuxConfidence(warmup_frac=0.5, max_weight=0.75, threshold=RollingBuffer(7), total_steps=40)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("cls-world")


def _names(graph):
    return {s.name: s for s in graph.stages}


def test_the_graph_has_every_stage_once_and_shares_what_pairs_share(root):
    graph = classification_graph(tiny_config(root))
    names = _names(graph)
    assert len(names) == len(graph.stages) == len({s.key for s in graph.stages})
    for seed in (0, 1):
        for prefix in ("items/", "weak-model/", "weak-labels/", "ceiling/", "zero-shot/", "features/",
                       "repair/knn/", "icl-refine/", "student/cross_entropy/", "student/aux_confidence/",
                       "student/repair-knn/", "student/icl-refine/", "probs/student/cross_entropy/",
                       "s2s-1/half-0/", "s2s-1/half-1/", "s2s-1/labels-0/", "s2s-1/labels/", "student/s2s-1/"):
            assert sum(n.startswith(prefix) and n.endswith(f"seed-{seed}") for n in names) == 1, (prefix, seed)
    roles = {(s.name, s.role) for s in graph.subjects if s.seed == 0}
    assert roles == {("weak", "weak"), ("ceiling", "ceiling"), ("zero-shot", "zero-shot"),
                     ("student/cross_entropy", "student"), ("student/aux_confidence", "student"),
                     ("probe/knn", "probe"), ("student/repair-knn", "student"), ("student/icl-refine", "student"),
                     ("student/s2s-1", "student")}
    assert {x.name for x in graph.label_sets if x.seed == 0} == {"weak", "repair/knn", "icl-refine", "s2s-1"}


def test_a_changed_setting_changes_the_key_of_what_depends_on_it_only(root):
    before = {n: s.key for n, s in _names(classification_graph(tiny_config(root))).items()}
    after = {n: s.key for n, s in _names(classification_graph(tiny_config(
        root, ["losses.aux_confidence.max_weight=0.5"]))).items()}
    assert before.keys() == after.keys()
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {n for n in before if n.startswith(("student/aux_confidence/", "probs/student/aux_confidence/"))}
    after = {n: s.key for n, s in _names(classification_graph(tiny_config(root, ["icl.demos=3"]))).items()}
    changed = {n for n in before if before[n] != after[n]}
    assert changed == {n for n in before if n.startswith(("icl-refine/", "student/icl-refine/",
                                                          "probs/student/icl-refine/"))}
    after = {n: s.key for n, s in _names(classification_graph(tiny_config(root, ["seeds=[0, 2]"]))).items()}
    assert {n for n in after if n.endswith("seed-0")} <= before.keys()
    assert all(after[n] == before[n] for n in after if n.endswith("seed-0"))


def test_a_sweep_graph_shares_each_models_stages_between_its_pairs(root):
    """weak = [w, s] and strong = [s, w]: the pairs (w, s) and (s, w); each model is trained once
    per role and seed, the strong features once per strong model and seed."""
    base = tiny_config(root)
    w, s = base.models.weak[0], base.models.strong[0]
    config = tiny_config(root, [f'models.weak=["{w}", "{s}"]', f'models.strong=["{s}", "{w}"]'])
    assert config.models.pairs() == [(0, 0), (1, 1)]
    graph = classification_graph(config)
    names = [stage.name for stage in graph.stages]
    assert len(names) == len(set(names)) == len({stage.key for stage in graph.stages})

    def count(prefix):
        return sum(n.startswith(prefix) for n in names)

    assert count("items/") == 2 and count("weak-model/") == count("ceiling/") == count("features/") == 4
    assert count("student/cross_entropy/") == count("student/aux_confidence/") == 4  # 2 pairs x 2 seeds
    pairs = {(x.weak, x.strong) for x in graph.subjects if x.role == "student"}
    assert len(pairs) == 2 and all(a != b for a, b in pairs)
