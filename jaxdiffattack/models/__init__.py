"""Models and their loading: the only package that touches checkpoints and model code.

The UNet and VAE are jaxdiffattack's own linen modules (`unet.py`, `vae.py`) loading diffusers
checkpoints directly; the text encoder and the scorers' models still come from transformers' Flax
classes. Everything else in jaxdiffattack sees `StableDiffusion` bundles, params pytrees and plain
functions, so the backing implementation can be replaced without touching the rest.
"""

from jaxdiffattack.models._quiet import silence_flax_deprecation
from jaxdiffattack.models.hub import ModelNotFoundError
from jaxdiffattack.models.hub import resolve
from jaxdiffattack.models.hub import TOY_ALIAS
from jaxdiffattack.models.stable_diffusion import load_stable_diffusion
from jaxdiffattack.models.stable_diffusion import StableDiffusion
from jaxdiffattack.models.weights import PickleWeightsError
from jaxdiffattack.models.weights import WeightsNotFoundError

silence_flax_deprecation()
from jaxdiffattack.models.random_init import random_stable_diffusion
from jaxdiffattack.models import vision
