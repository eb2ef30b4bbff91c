"""distil — a knowledge-distillation toolkit for PyTorch.

The Python API in one breath::

    from distil import load_config, run
    result = run(load_config("kd-mnist1d", ["train.epochs=5"]))

Losses live in :mod:`distil.losses`, methods in :mod:`distil.methods`, teachers in
:mod:`distil.teachers`, the one loop in :mod:`distil.train`.
"""

__version__ = "0.1.0"
