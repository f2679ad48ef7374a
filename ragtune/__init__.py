"""ragtune: build, fine-tune, evaluate, tune and serve Transformer text models from one YAML file."""

__version__ = "0.1.0"
