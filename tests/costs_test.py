"""Tests for jaxdiffattack.costs: sampler FLOPs from XLA's cost analysis and the roofline bounds.

References: PyTorch's FLOP counter on the diffusers PyTorch SD1.5 modules (built on the meta
device: no memory, no weights), SD1.5's published parameter counts, and XLA's count of the whole
one-step sampler program.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import costs
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import schedulers
from jaxdiffattack.models import random_init


@pytest.fixture(scope="module")
def sd15():
  sd, params = random_init.random_stable_diffusion("sd15", "bfloat16", abstract=True)
  return sd, params


def _count(tree) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def test_abstract_sd15_has_the_published_shapes(sd15):
  sd, params = sd15
  assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree_util.tree_leaves(params))
  # runwayml/stable-diffusion-v1-5: UNet 859,520,964 and VAE 83,653,863 parameters.
  assert _count(params["unet"]) == 859_520_964
  assert _count(params["vae"]) == 83_653_863
  assert sd.latent_shape == (4, 64, 64) and sd.image_size == 512


def test_sd15_flops_match_pytorch_flop_counter(sd15):
  import torch  # pylint: disable=g-import-not-at-top
  from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top
  import diffusers  # pylint: disable=g-import-not-at-top
  spec = random_init.SD15
  with torch.device("meta"):
    unet = diffusers.UNet2DConditionModel.from_config(spec["unet"])
    vae = diffusers.AutoencoderKL.from_config(spec["vae"])
    z = torch.zeros(1, 4, 64, 64)
    with flop_counter.FlopCounterMode(display=False) as counter:
      unet(z, torch.zeros(1), encoder_hidden_states=torch.zeros(1, 77, 768))
    torch_unet = counter.get_total_flops()
    with flop_counter.FlopCounterMode(display=False) as counter:
      vae.decode(z)
    torch_vae = counter.get_total_flops()
  sd, params = sd15
  flops = costs.sampler_flops(sd, params, 50, True, random_init.text_shape("sd15"))
  # Measured: XLA 0.788 vs PyTorch 0.803 TFLOP per UNet call, 2.505 vs 2.515 per VAE decode.
  np.testing.assert_allclose(flops.unet_call, torch_unet, rtol=0.03)
  np.testing.assert_allclose(flops.vae_decode, torch_vae, rtol=0.03)
  assert flops.per_image == 50 * 2 * flops.unet_call + flops.vae_decode
  no_cfg = costs.sampler_flops(sd, params, 50, False, random_init.text_shape("sd15"))
  assert no_cfg.per_image == 50 * flops.unet_call + flops.vae_decode


def test_abstract_and_concrete_params_give_the_same_count(tiny_sd_model):
  sd, params = tiny_sd_model
  text_shape = (sd.max_length, sd.text_dim)
  concrete = costs.sampler_flops(sd, params, 4, True, text_shape)
  assert concrete == costs.sampler_flops(sd, costs.abstract(params), 4, True, text_shape)
  assert concrete.unet_call > 0 and concrete.vae_decode > 0


def test_per_image_matches_the_whole_sampler_program(tiny_sd_model):
  """XLA's count of the compiled one-step sampler for P members ≈ P × per-image (the scan body
  runs once, so the count is exact; CFG mixing and scheduler arithmetic add < 1 %)."""
  sd, params = tiny_sd_model
  population, text_shape = 3, (sd.max_length, sd.text_dim)
  scheduler = schedulers.make_scheduler("ddim", sd.scheduler_config, 1)
  program = jax.jit(lambda p, z, c, u: sampler_lib.sample(sd, scheduler, p, z, c, u, 7.5).images)
  args = (jax.ShapeDtypeStruct((population,) + sd.latent_shape, jnp.float32),
          jax.ShapeDtypeStruct((population,) + text_shape, jnp.float32),
          jax.ShapeDtypeStruct(text_shape, jnp.float32))
  analysis = program.lower(costs.abstract({"unet": params["unet"], "vae": params["vae"]}),
                           *args).cost_analysis()
  whole = float(analysis["flops"])
  per_image = costs.sampler_flops(sd, params, 1, True, text_shape).per_image
  np.testing.assert_allclose(whole, population * per_image, rtol=0.01)


def test_roofline_and_share_bound():
  # 1 TFLOP per image at 2 TFLOP/s: 2 images/s; 10 images take 5 s; 0.1 s beside them.
  assert costs.roofline_images_per_s(1e12, 2.0) == pytest.approx(2.0)
  assert costs.share_bound(0.1, 10, 1e12, 2.0) == pytest.approx(0.1 / 5.1)
  with pytest.raises(ValueError, match="peak_tflops"):
    costs.roofline_images_per_s(1e12, 0.0)


def test_bad_steps_is_refused(tiny_sd_model):
  sd, params = tiny_sd_model
  with pytest.raises(ValueError, match="num_steps"):
    costs.sampler_flops(sd, params, 0, True, (sd.max_length, sd.text_dim))
