"""jaxdiffattack: population-scale failure search for text-to-image diffusion models in JAX."""
import pathlib

from setuptools import find_packages, setup

_HERE = pathlib.Path(__file__).parent


def _package_data():
  """Every non-Python file under jaxdiffattack/ (toy-world weights, label sets)."""
  root = _HERE / "jaxdiffattack"
  return [str(p.relative_to(root)) for p in root.rglob("*")
          if p.is_file() and p.suffix not in (".py", ".pyc")]


setup(
    name="jaxdiffattack",
    version="0.1.0",
    description=__doc__,
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["jaxdiffattack", "jaxdiffattack.*"]),
    package_data={"jaxdiffattack": _package_data()},
    install_requires=[
        # Verified with jax 0.10.2 / flax 0.12.8 (the newest releases, 2026-11-29). jax without
        # the [cpu] extra: on an accelerator install jax[cuda12] (or jax[tpu]) beside this package.
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2",
        "chex>=0.1.90",
        # Only the tokenizers and image processors come from transformers (no model classes, no
        # Flax): verified with 4.57.6 and 5.24.0.
        "transformers>=4.57",
        "evosax>=0.3,<0.4",
        "numpy>=1.26",
        "absl-py",
        "ml_collections>=1.0",
        "safetensors>=0.4",
        "pillow",
        "matplotlib",
        "scipy",   # normality tests of found latents (search reports)
        "regex",   # the toy tokenizer's CLIP pre-tokenisation pattern
    ],
    extras_require={
        # torch==2.13.0 is the CPU build; an unpinned torch pulls a multi-GB CUDA build.
        # diffusers/transformers' PyTorch modules are the parity references of the tests and the
        # baselines of the benchmarks. The tests pin them: their tiny checkpoints are drawn by
        # these libraries' random initialisers (transformers 5 draws other weights), and some
        # search tests assert outcomes on exactly those weights. The runtime is not pinned: with
        # transformers 5.24 + diffusers 0.42 the whole suite passes but for those 5 search tests.
        # ftfy: open_clip's reference tokenizer (tests/fullshape_models.py). The real CLIP BPE
        # merges come from the open-clip-torch 3.3.0 wheel, fetched with `pip download
        # --no-deps` when open_clip is not installed: as a dependency it pulls torchvision, whose
        # PyPI wheel is a CUDA build that cannot load beside torch 2.13.0+cpu and then breaks
        # transformers' and diffusers' imports.
        # pytest-xdist: the suite runs on both cores (`-n 2 --dist loadfile`, README).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "torch==2.13.0", "diffusers==0.39.0",
                 "transformers>=4.57,<5",
                 "scikit-image",    # SSIM reference of the analysis tests
                 # The page tests drive Debian's chromium + chromium-driver (.ci/run installs
                 # them); κ and clustered-interval references of the ratings tests.
                 "selenium>=4.20", "scikit-learn", "statsmodels",
                 "ftfy"],
        "bench": ["torch==2.13.0", "diffusers>=0.39"],
    },
)
