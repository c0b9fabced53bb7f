"""citrus_jax: the Citrus medical-LLM recipe (CPT -> SFT x3 -> CPO/SimPO -> eval) in JAX."""
import setuptools

# Compatible ranges, so the package installs beside a user's `jax[tpu]` or `jax[cuda]`; CI and
# `make install*` install the exact versions tested here from constraints.txt (Python 3.11; on
# 3.12 the newer jax 0.12 stack is what pip resolves inside these ranges).
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.13",
    "jaxlib>=0.10.2,<0.13",
    "flax>=0.12.8,<0.14",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.14",
    "grain>=0.2.18,<0.3",
    "tensorflow-datasets>=4.9.10,<5",
    "array-record>=0.8.6,<0.10",
    "ml-collections>=1.1,<2",
    "sentencepiece>=0.2.3,<0.3",
    "safetensors>=0.8,<1",
    "tokenizers>=0.23,<1",
    "absl-py>=2.5,<3",
    "numpy>=2.4,<3",
    "protobuf>=7.36,<8",
    "tensorboardX>=2.6.5,<3",  # TensorBoard event files without TensorFlow (train/metrics_log.py)
    "tqdm>=4.66,<5",
    "jinja2>=3.1,<4",
    "matplotlib>=3.8,<4",  # the report's figures
]

# The OpenAI-compatible server (`python -m citrus_jax.infer.serve`): the async HTTP stack vLLM
# uses. serve.py extends uvicorn's h11 protocol class, hence the upper bounds.
SERVE_REQUIRES = [
    "fastapi>=0.163,<1",
    "uvicorn>=0.54,<0.60",
    "h11>=0.16,<1",
    "pydantic>=2.13,<3",
]

# Reference stack for parity tests and HF interop. torch is pinned in the SAME requirement set as
# transformers/trl so pip does not pull a multi-GB CUDA build of a newer torch.
TEST_REQUIRES = [
    "torch==2.13.0",
    "transformers==5.24.0",
    "trl==1.16.0",
    "pytest",
    "openai==3.57.0",
    "peft==0.21.2",  # adapter interop tests (LoRA export/import against PEFT)
    "openpyxl==3.1.5",  # the JMED .xlsx reader's tests
    *SERVE_REQUIRES,
    "schemathesis>=4.32,<5",  # the server's OpenAPI fuzz
    # Executing the Colab notebook headlessly in tests.
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
]

setuptools.setup(
    name="citrus_jax",
    version="0.1.0",
    description="JAX/TPU-native reproduction of Citrus, an expert-clinician-style medical LLM.",
    python_requires=">=3.11",
    # configs/ ships as citrus_jax.configs, so an installed package runs `--config=configs/...`
    # from any directory (citrus_jax/shipped_configs.py).
    packages=setuptools.find_packages(include=["citrus_jax", "citrus_jax.*"]) + ["citrus_jax.configs"],
    package_dir={"citrus_jax.configs": "configs"},
    package_data={"citrus_jax": ["**/*.txt", "**/*.jinja"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "serve": SERVE_REQUIRES,
        "xlsx": ["openpyxl>=3.1,<4"],  # JMED's released spreadsheet
        "test": TEST_REQUIRES,
    },
)
