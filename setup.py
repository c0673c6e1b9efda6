"""Packaging for varmem.

Ranges are deliberately loose: the lower bounds are the oldest releases whose APIs varmem uses
(safetensors metadata, ``torch.load(weights_only=True)``, ``pyro.settings``); there are no upper
bounds except where a known break exists.  The README's commands install the CPU build of torch
*before* this package, so that the range below is already satisfied and pip pulls nothing more.
"""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "varmem" / "_version.py").read_text(), version)

install_requires = [
    "torch>=2.2",
    "pyro-ppl>=1.9",
    "numpy>=1.24",
    "arviz>=0.16",
    "matplotlib>=3.7",
    "tqdm>=4.60",
    "safetensors>=0.4",
    "scikit-learn>=1.2",
    "scipy>=1.9",  # SparseRecoveryMemory's LP reader (HiGHS); also a dependency of scikit-learn
    "mlxtend>=0.22",
    "pillow>=9",
]
test_requires = [
    "pytest>=7.4",
    "pytest-timeout>=2.1",
    "nbmake>=1.4",
    "nbformat>=5.7",
    "nbclient>=0.7",
    "ipykernel>=6",
    "import-linter>=2.0",
    "faiss-cpu>=1.7.3",  # the indexed-read tests (varmem.indexed) run, not skip
]

setup(
    name="varmem",
    version=version["__version__"],
    description="Associative memories as Pyro generative models: remembering is inference.",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["varmem", "varmem.*"]),
    install_requires=install_requires,
    extras_require={"test": test_requires, "all": test_requires,
                    "faiss": ["faiss-cpu>=1.7.3"]},  # varmem.indexed: nearest-neighbour (indexed) reads
    entry_points={"console_scripts": ["varmem = varmem.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
