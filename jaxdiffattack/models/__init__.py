"""Models and their loading: the only package that touches checkpoints and model code.

Every model is jaxdiffattack's own linen module — the UNet and VAE (`unet.py`, `vae.py`), the CLIP
text and vision towers (`clip.py`), the ViT, ResNet and RegNet classifiers (`vit.py`, `resnet.py`,
`regnet.py`) — with one attention function (`attention.py`); checkpoints in the diffusers / transformers layouts load
straight into their param trees (`convert_diffusers.py`, `convert_transformers.py`; msgpack or
safetensors, pickle refused). Only the tokenizers come from transformers. Everything else in jaxdiffattack sees `StableDiffusion` bundles, params pytrees and plain
functions, so the backing implementation can be replaced without touching the rest.
"""

from jaxdiffattack.models.hub import ModelNotFoundError
from jaxdiffattack.models.hub import resolve
from jaxdiffattack.models.hub import TOY_ALIAS
from jaxdiffattack.models.stable_diffusion import load_stable_diffusion
from jaxdiffattack.models.stable_diffusion import StableDiffusion
from jaxdiffattack.models.weights import PickleWeightsError
from jaxdiffattack.models.weights import WeightsNotFoundError
from jaxdiffattack.models.random_init import random_stable_diffusion
from jaxdiffattack.models import vision
