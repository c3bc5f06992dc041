"""Runnable example configs, one per model × task, shipped with the package.

Each module defines ``get_config(variant=None)`` with a ``smoke`` variant (what CI runs). Load one by name from any
directory — ``load_config("digits_mlp")``, ``jaxdl train digits_mlp:smoke`` — or by path (``configs/digits_mlp.py``;
the repository's top-level ``configs`` is a link to this folder). ``jaxdl.config.list_configs()`` names them all.

This package imports nothing: :mod:`jaxdl.config` finds the files next to it without importing them as modules.
"""
