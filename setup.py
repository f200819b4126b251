"""Packages are found, not listed: ``dalif_deploy`` and its two folders installed inside it
(``converters/`` as ``dalif_deploy.converters``, ``targets/`` as ``dalif_deploy.targets``).
Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

FOLDERS = {"dalif_deploy": "dalif_deploy", "dalif_deploy.converters": "converters",
           "dalif_deploy.targets": "targets"}

setup(
    packages=[f"{pkg}.{sub}" if sub else pkg for pkg, folder in FOLDERS.items()
              for sub in ["", *find_packages(folder)]],
    package_dir=FOLDERS,
)
