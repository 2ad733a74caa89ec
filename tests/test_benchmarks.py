"""The benchmark scripts run end to end on tiny settings, and their correctness checks hold.

No timing is asserted (speed is reported by the scripts, see docs/benchmarks.md); these tests keep
the scripts from rotting and check what they compare is the same computation.
"""

import re

import pytest

from benchmarks import theory_bench


def test_theory_bench_engines_agree(monkeypatch):
    monkeypatch.setenv("W2S_COMPILATION_CACHE", "off")  # the script enables the cache: nothing written here
    out = theory_bench.main(["--trials", "400", "--numpy-trials", "60", "--n", "40"])
    # the JAX engine and the numpy loop estimate the same mean risks (129 comparisons)
    assert out["z_max"] <= 4.5, out
    assert out["jax_trials_per_s"] > 0 and out["numpy_trials_per_s"] > 0


def test_lm_bench_cpu_comparison_prints_every_ratio(capsys):
    pytest.importorskip("torch", reason="the LM benchmark compares against transformers' PyTorch model")
    from benchmarks import lm_bench

    lm_bench.main(["--preset", "small", "--batch-size", "2", "--seq-len", "16", "--prompt-len", "4",
                   "--new-tokens", "4", "--repeats", "1", "--no-reuse-host-memory"])
    table = capsys.readouterr().out
    for row in ("forward", "train step", "generate"):
        match = re.search(rf"\| {row}[^|]*\|\s+(\d+) \|\s+(\d+) \|\s+([\d.]+)x \|", table)
        assert match and float(match.group(3)) > 0, table


def test_pipeline_bench_prints_every_ratio(capsys):
    pytest.importorskip("torch", reason="the labelling benchmark compares against transformers' generate")
    from benchmarks import pipeline_bench

    ratios = pipeline_bench.main(["--preset", "tiny", "--queries", "6", "--icl-batch", "3", "--batch-size", "4",
                                  "--max-new-tokens", "4", "--repeats", "1", "--no-reuse-host-memory"])
    out = capsys.readouterr().out
    assert "greedy tokens of the first batch agree with transformers" in out, out
    assert "batched labels equal one-at-a-time labels" in out, out
    for side in ("one_at_a_time", "transformers"):
        match = re.search(rf"ratio ours/{side}: ([\d.]+)x wall \(([\d.]+)x CPU time\)", out)
        assert match and float(match.group(1)) > 0 and float(match.group(2)) > 0, out
        assert ratios[side] == pytest.approx(float(match.group(1)), abs=0.01)


def test_lm_scale_bench_tiny_checkpoint_agrees_with_transformers(capsys, tmp_path):
    pytest.importorskip("torch", reason="the scale benchmark compares against transformers' PyTorch model")
    from benchmarks import lm_scale_bench

    lm_scale_bench.main(["--preset", "tiny", "--in-process", "--repeats", "1", "--checkpoint-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert len(list(tmp_path.glob("model-0000?-of-00003.safetensors"))) == 3  # sharded like a release
    for row in ("load", "peak anon memory", "compile", "generate 16 tokens", "score"):
        cell = r"\s+-?[\d.]+ \|"  # compile: first call minus a warm one, may be ~0 or below for transformers
        ratio = r"\s+(-?[\d.]+x|-) \|"  # "-" where the baseline's figure is not positive
        assert re.search(rf"\| {row}[^|]*\|({cell}){{2}}{ratio}({cell}){{2}}{ratio}", out), out
    assert "float32: 16 greedy tokens identical: True" in out, out


def test_program_hashes_tell_programs_apart(monkeypatch):
    """Equal fingerprints for the same program lowered twice; different ones for another backend."""
    from jax._src.cudnn import fused_attention_stablehlo

    from benchmarks import program_hashes

    # lowering cuDNN's attention (bf16 for cuda) asks for the installed version; this host has none
    monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 91000)

    cpu = program_hashes.fingerprints("cpu", batch=2, slots=64)
    assert cpu == program_hashes.fingerprints("cpu", batch=2, slots=64)
    cuda = program_hashes.fingerprints("cuda", batch=2, slots=64)
    assert set(cpu) == set(cuda) and all(cpu[k] != cuda[k] for k in ("prefill float32", "decode float32"))
