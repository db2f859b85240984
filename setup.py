"""Maps the top-level folders converters/, targets/ and runtimes/ to edgekit.converters, edgekit.targets and
edgekit.runtimes (see pyproject.toml); everything else is declared in pyproject.toml."""
from setuptools import find_packages, setup

ROOTS = {"edgekit": "edgekit", "edgekit.converters": "converters", "edgekit.targets": "targets",
         "edgekit.runtimes": "runtimes"}
packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]
setup(packages=sorted(set(packages)))
