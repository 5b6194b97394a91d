"""The shipped cost-model files, installed as the package data ``meshsim._models``.

This folder stays at the top of the repository (where users look for the models and their
sources) and pyproject.toml maps it into the package, so a wheel carries the same files that an
editable install reads. :func:`meshsim.models.models_dir` finds them with importlib.resources.
"""
