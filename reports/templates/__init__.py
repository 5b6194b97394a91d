"""The report templates, installed as the package data ``meshsim._templates``.

pyproject.toml maps this folder into the package so that a wheel renders reports too;
:mod:`meshsim.report.render` finds it with importlib.resources.
"""
