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

# Reference stack for parity tests and HF interop. torch is pinned in the SAME requirement set as
# transformers/trl so pip does not pull a multi-GB CUDA build of a newer torch.
TEST_REQUIRES = [
    "torch==2.13.0",
    "transformers==5.24.0",
    "trl==1.16.0",
    "pytest",
    "openai==3.57.0",
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
    packages=setuptools.find_packages(include=["citrus_jax", "citrus_jax.*"]),
    package_data={"citrus_jax": ["**/*.txt", "**/*.jinja"]},
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
)
