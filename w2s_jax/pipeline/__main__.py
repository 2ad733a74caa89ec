"""``python -m w2s_jax.pipeline EXPERIMENT.toml [flags]`` is ``w2s run EXPERIMENT.toml [flags]``."""

import sys

from w2s_jax.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
