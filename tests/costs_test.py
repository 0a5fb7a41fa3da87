"""Tests for jaxdiffattack.costs: sampler FLOPs from XLA's cost analysis and the roofline bounds.

References: PyTorch's FLOP counter on the diffusers PyTorch SD1.5 modules (built on the meta
device: no memory, no weights), SD1.5's published parameter counts, and XLA's count of the whole
one-step sampler program. The memory planner: its choice of microbatch against the test's own
compiles of the chosen and the next size; published SD 2.1 shapes against diffusers/transformers.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import costs
from jaxdiffattack import generate
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import schedulers
from jaxdiffattack.errors import ConfigError
from jaxdiffattack.errors import UserError
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


# ------------------------------------------------------------------------- memory planner --


def test_abstract_sd21_has_the_published_shapes():
  """SD 2.1's UNet and text tower against diffusers' / transformers' PyTorch modules built on
  the meta device from the same configs (no memory, no weights)."""
  import torch  # pylint: disable=g-import-not-at-top
  import diffusers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  sd, params = random_init.random_stable_diffusion("sd21", "bfloat16", abstract=True,
                                                   text_encoder=True, resolution=256)
  with torch.device("meta"):
    unet = diffusers.UNet2DConditionModel.from_config(random_init.SD21["unet"])
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        **random_init.SD21["text_encoder"]))
  count = lambda m: sum(p.numel() for p in m.parameters())
  assert _count(params["unet"]) == count(unet) == 865_910_724   # stabilityai/stable-diffusion-2-1
  assert _count(params["text_encoder"]) == count(text)
  assert sd.latent_shape == (4, 32, 32) and sd.prediction_type == "v_prediction"
  assert random_init.text_shape("sd21") == (77, 1024)


def _direct_bytes(fn, *args) -> int:
  """The test's own reading of XLA's memory analysis (not costs.program_bytes)."""
  m = jax.jit(fn).lower(*args).compile().memory_analysis()
  return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)


def _chunk_args(pop, members):
  """The abstract arguments of `PopulationSampler`'s compiled chunk of `members` members."""
  sd = pop.sd
  text = (sd.max_length, sd.text_dim)
  spec = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct((members,) + shape, dtype)
  return (costs.abstract(pop.params), spec(sd.latent_shape), spec(text), spec(text), spec(()),
          {})


def test_auto_microbatch_fits_the_budget_and_the_next_does_not(tiny_sd_model):
  sd, params = tiny_sd_model
  settings = sampler_lib.SamplerSettings(num_steps=1)
  reference = sampler_lib.PopulationSampler(sd, params, settings)
  b3, b4 = (_direct_bytes(reference.function, *_chunk_args(reference, m)) for m in (3, 4))
  assert b3 < b4
  budget = (b3 + b4) // 2
  pop = sampler_lib.PopulationSampler(sd, params, settings, microbatch="auto",
                                      memory_budget_gb=budget / 1e9)
  population = 7
  latents = sampler_lib.member_latents(jax.random.PRNGKey(0), range(population), sd.latent_shape)
  cond = np.random.default_rng(0).standard_normal(
      (population, sd.max_length, sd.text_dim)).astype(np.float32)
  uncond = np.zeros((sd.max_length, sd.text_dim), np.float32)
  out = pop(latents, cond, uncond, 7.5)
  (plan,) = pop.plans.values()
  chosen = plan.microbatch
  assert _direct_bytes(pop.function, *_chunk_args(pop, chosen)) <= budget
  assert _direct_bytes(pop.function, *_chunk_args(pop, chosen + 1)) > budget
  assert chosen == 3
  # The split does not change the images.
  np.testing.assert_allclose(out.images, reference(latents, cond, uncond, 7.5).images,
                             atol=1e-5)


def test_memory_cost_is_fixed_plus_per_member(tiny_sd_model):
  sd, params = tiny_sd_model
  fused = sampler_lib.FusedSampler.build(sd, sampler_lib.SamplerSettings(num_steps=1))
  fp = sampler_lib.fused_params(params)
  text = (sd.max_length, sd.text_dim)
  program = costs.sampler_program(fused, fp, sd.latent_shape, text)
  cost = costs.memory_cost(program, (1, 3))
  args = lambda m: (costs.abstract(fp), jax.ShapeDtypeStruct((m,) + sd.latent_shape, jnp.float32),
                    jax.ShapeDtypeStruct((m,) + text, jnp.float32),
                    jax.ShapeDtypeStruct(text, jnp.float32),
                    jax.ShapeDtypeStruct((m,), jnp.float32), {})
  assert cost.totals == tuple(_direct_bytes(fused, *args(m)) for m in (1, 3))
  # Every UNet weight is read by every call (the VAE's encoder is not: XLA leaves it out).
  unet_bytes = sum(leaf.size * leaf.dtype.itemsize
                   for leaf in jax.tree_util.tree_leaves(params["unet"]))
  image_bytes = sd.image_size ** 2 * 3 * 4
  assert cost.fixed >= unet_bytes                 # the params are arguments of every call
  assert cost.per_member >= image_bytes           # each member's image is an output
  assert cost.bytes_for(3) == pytest.approx(cost.totals[1])
  assert cost.max_members(cost.bytes_for(5) + 1) == 5


def test_auto_microbatch_needs_a_budget_on_cpu(tiny_sd_model):
  sd, params = tiny_sd_model
  settings = sampler_lib.SamplerSettings(num_steps=1)
  with pytest.raises(ConfigError, match=r"needs a memory budget.*--config.memory_budget_gb") as e:
    sampler_lib.PopulationSampler(sd, params, settings, microbatch="auto")
  assert "\n" not in str(e.value)
  with pytest.raises(ConfigError, match=r"config.microbatch='big' is invalid"):
    costs.validate_microbatch("big", None)
  with pytest.raises(ConfigError, match=r"config.microbatch=0 is invalid"):
    costs.validate_microbatch(0, None)
  with pytest.raises(ConfigError, match=r"config.memory_budget_gb=-1.0 is invalid"):
    costs.validate_microbatch("auto", -1.0)
  costs.validate_microbatch("auto", 40.0)
  costs.validate_microbatch(4, None)
  with pytest.raises(ConfigError, match=r"config.microbatch='auto' needs a memory budget"):
    generate.validate(_generate_config(microbatch="auto"))
  generate.validate(_generate_config(microbatch="auto", memory_budget_gb=8.0))


def _generate_config(**overrides):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(__file__).resolve().parent.parent / "configs" / "generate.py"
  spec = importlib.util.spec_from_file_location("generate_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in overrides.items():
    config[key] = value
  return config


def test_one_member_over_the_budget_is_a_one_line_error(tiny_sd_model):
  sd, params = tiny_sd_model
  fused = sampler_lib.FusedSampler.build(sd, sampler_lib.SamplerSettings(num_steps=1))
  program = costs.sampler_program(fused, sampler_lib.fused_params(params), sd.latent_shape,
                                  (sd.max_length, sd.text_dim))
  with pytest.raises(UserError, match=r"one member needs .* GB, over the memory budget") as e:
    costs.auto_microbatch(program, 1000)
  assert "\n" not in str(e.value)


@pytest.mark.slow
def test_gradient_and_attack_programs(tiny_sd_model):
  """Gradient depths and the ATM step: every-step gradients keep more per member than the last
  step's; an ATM prompt holds at least θ and Adam's two moments, 3 · L · V float32."""
  from jaxdiffattack.attacks import atm  # pylint: disable=g-import-not-at-top
  sd, params = tiny_sd_model
  text = (sd.max_length, sd.text_dim)
  fp = sampler_lib.fused_params(params)
  build = lambda **kw: sampler_lib.FusedSampler.build(sd, sampler_lib.SamplerSettings(
      num_steps=3, **kw))
  forward = costs.memory_cost(costs.sampler_program(build(), fp, sd.latent_shape, text))
  last = costs.memory_cost(costs.gradient_program(build(grad_steps=1), fp, sd.latent_shape,
                                                  text))
  every = costs.memory_cost(costs.gradient_program(build(), fp, sd.latent_shape, text))
  assert forward.per_member < last.per_member < every.per_member
  score_fn = lambda p, images, aux: {"m": images.mean((1, 2, 3)) * (aux["label"] + 1)}
  attack = atm.Attack.build(sd, atm.Settings(), score_fn, "m", num_steps=3)
  program = costs.attack_program(attack, {
      "text_encoder": params["text_encoder"], "uncond": jnp.zeros(text),
      "fused": sampler_lib.fused_params(params, {})}, sd.max_length)
  cost = costs.memory_cost(program)
  assert cost.per_member >= 3 * sd.max_length * attack.vocab_size * 4
