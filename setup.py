"""citrus_jax: the Citrus medical-LLM recipe (CPT -> SFT x3 -> CPO/SimPO -> eval) in JAX."""
import setuptools

# Versions known to work together on Python 3.11 (see docs and ENVIRONMENT notes).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "ml-collections==1.1.0",
    "sentencepiece==0.2.3",
    "safetensors==0.8.0",
    "tokenizers==0.23.3",
    "absl-py==2.5.1",
    "numpy==2.4.6",
    "protobuf==7.36.2",
    "tqdm",
    "jinja2>=3.1",
    "matplotlib",
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
    extras_require={"serve": SERVE_REQUIRES, "test": TEST_REQUIRES},
)
