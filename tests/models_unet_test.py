"""jaxdiffattack's UNet against diffusers' PyTorch UNet2DConditionModel on tiny random configs.

Each PyTorch model writes its own safetensors (`save_pretrained`), which the project's loader maps
into its param tree; outputs must agree within 1e-5 of the output scale in float32. Gradients are
checked against central differences in float64 (no float32 rounding in the differences).
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import text
from jaxdiffattack.models import load_stable_diffusion
from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.models import weights

import tiny_sd

torch = pytest.importorskip("torch")

# SD1-like: conv 1×1 projections, one head count, a plain down/up level, GroupNorm groups ≠ 32.
SD1 = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
           up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
           attention_head_dim=4, norm_num_groups=8)
# SD2-like: linear projections, a head count per level, upcast attention, two transformer layers
# at the lower level, an odd sample size (upsampling to the skip connection's size).
SD2 = dict(sample_size=9, block_out_channels=(32, 64), layers_per_block=1,
           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
           up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
           attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True,
           transformer_layers_per_block=(1, 2), norm_num_groups=16)
# Learned variance (out_channels = 2 × in_channels), cross-attention only, other timestep
# embedding conventions, three levels, two layers per block.
LEARNED_VARIANCE = dict(
    sample_size=8, out_channels=8, block_out_channels=(16, 32, 32), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=8, attention_head_dim=2, only_cross_attention=True,
    flip_sin_to_cos=False, freq_shift=1, norm_num_groups=8, norm_eps=1e-6)
CONFIGS = {"sd1": SD1, "sd2": SD2, "learned_variance": LEARNED_VARIANCE}


def _write_torch_unet(directory: pathlib.Path, config: dict, seed: int = 0):
  from diffusers import UNet2DConditionModel  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = tiny_sd.perturb(UNet2DConditionModel(**config)).eval()
  model.save_pretrained(directory, safe_serialization=True)
  return model


@pytest.fixture(scope="module")
def unets(tmp_path_factory):
  """{name: (torch module, directory)} with safetensors written by the torch module."""
  root = tmp_path_factory.mktemp("unets")
  return {name: (_write_torch_unet(root / name, config), root / name)
          for name, config in CONFIGS.items()}


def _inputs(config, batch=2, length=5, seed=0):
  rng = np.random.default_rng(seed)
  size = config["sample_size"]
  sample = rng.standard_normal((batch, 4, size, size)).astype(np.float32)
  context = rng.standard_normal((batch, length, config["cross_attention_dim"])).astype(np.float32)
  return sample, np.array([3.0, 701.0], np.float32)[:batch], context


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_pytorch_unet(unets, name):
  model, directory = unets[name]
  unet, params = weights.load_diffusers_model("unet", directory)
  assert unet.config.flax_numerics is False          # a PyTorch-written config.json
  assert unet.config.learned_variance == (name == "learned_variance")
  sample, t, context = _inputs(CONFIGS[name])
  with torch.no_grad():
    expected = model(torch.from_numpy(sample), torch.from_numpy(t),
                     encoder_hidden_states=torch.from_numpy(context)).sample.numpy()
  got = np.asarray(jax.jit(unet.apply)({"params": params}, sample, t, context))
  assert got.shape == expected.shape == (2, model.config.out_channels) + sample.shape[2:]
  scale = np.abs(expected).max()
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * scale)
  assert np.abs(expected[0] - expected[1]).mean() > 1e-2 * scale   # inputs matter


def test_params_are_fully_determined_by_the_checkpoint(unets):
  """Every weight of the torch module lands in the tree, transposed to Flax layout."""
  model, directory = unets["sd2"]
  _, params = weights.load_diffusers_model("unet", directory)
  block = model.down_blocks[1].attentions[0]
  flax_block = params["down_blocks_1"]["attentions_0"]
  np.testing.assert_array_equal(flax_block["proj_in"]["kernel"],
                                block.proj_in.weight.detach().numpy().T)      # linear
  ff = block.transformer_blocks[1].ff.net[0].proj.weight.detach().numpy()
  np.testing.assert_array_equal(
      flax_block["transformer_blocks_1"]["ff"]["net_0"]["proj"]["kernel"], ff.T)
  n_torch = sum(p.numel() for p in model.parameters())
  assert sum(x.size for x in jax.tree_util.tree_leaves(params)) == n_torch


def test_gradients_match_finite_differences(unets):
  """d(Σ w·UNet(x, t, c)) / d(x, c) along random directions vs central differences (float64)."""
  _, directory = unets["sd2"]
  unet, params = weights.load_diffusers_model("unet", directory)
  sample, t, context = _inputs(SD2, seed=1)
  rng = np.random.default_rng(2)
  with jax.enable_x64(True):
    unet64 = unet.clone(dtype=jnp.float64)
    params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    w = jnp.asarray(rng.standard_normal((2, 4, 9, 9)))

    @jax.jit
    def loss(x, c):
      return jnp.sum(w * unet64.apply({"params": params64}, x, jnp.asarray(t, jnp.float64), c))

    x0, c0 = jnp.asarray(sample, jnp.float64), jnp.asarray(context, jnp.float64)
    grads = jax.grad(loss, argnums=(0, 1))(x0, c0)
    eps = 1e-5
    for _ in range(2):
      dx, dc = (jnp.asarray(rng.standard_normal(a.shape)) for a in (x0, c0))
      numeric = (loss(x0 + eps * dx, c0 + eps * dc) - loss(x0 - eps * dx, c0 - eps * dc)) / (
          2 * eps)
      analytic = jnp.sum(grads[0] * dx) + jnp.sum(grads[1] * dc)
      np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)


def test_config_round_trip(unets, tmp_path):
  """save_diffusers_model writes a config.json and msgpack that load back to the same model."""
  _, directory = unets["learned_variance"]
  unet, params = weights.load_diffusers_model("unet", directory)
  weights.save_diffusers_model(tmp_path, unet, params)
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["_class_name"] == "UNet2DConditionModel" and config["out_channels"] == 8
  again, params_again = weights.load_diffusers_model("unet", tmp_path)
  assert again.config == unet.config
  jax.tree_util.tree_map(np.testing.assert_array_equal, params_again, params)


def test_sd2_like_v_prediction_pipeline_matches_pytorch(tmp_path):
  """The whole sampler on an SD2-like UNet with a v-prediction scheduler vs diffusers' pipeline."""
  # (8×8 latents: diffusers' pipeline wants image sides divisible by 8.)
  pt_dir, _ = tiny_sd.build(tmp_path, seed=3, prediction_type="v_prediction",
                            unet_config=dict(SD2, sample_size=8))
  sd, params = load_stable_diffusion(str(pt_dir))
  assert sd.prediction_type == "v_prediction" and sd.latent_shape == (4, 8, 8)
  prompts = ["a red cube", "two blue spheres"]
  latents = np.random.default_rng(4).standard_normal((2, 4, 8, 8)).astype(np.float32)
  cond = text.encode_prompts(sd, params["text_encoder"], prompts)
  uncond = text.encode_prompts(sd, params["text_encoder"], [""])[0]
  settings = sampler_lib.SamplerSettings(scheduler="ddim", num_steps=4)
  got = sampler_lib.PopulationSampler(sd, params, settings)(latents, cond, uncond, 5.0).images
  pipe = tiny_sd.torch_pipeline(pt_dir, "ddim")
  expected = tiny_sd.torch_generate(pipe, prompts, latents, 4, 5.0)
  assert got.shape == expected.shape == (2, 16, 16, 3)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
  assert np.abs(expected[0] - expected[1]).mean() > 1e-3


def test_cross_attention_capture(unets):
  """Captured maps: one per text attention, rows are distributions, output unchanged."""
  _, directory = unets["learned_variance"]
  unet, params = weights.load_diffusers_model("unet", directory)
  sample, t, context = _inputs(LEARNED_VARIANCE)
  plain = jax.jit(unet.apply)({"params": params}, sample, t, context)
  out, maps = jax.jit(lambda p, x, t, c: unet_lib.unet_cross_attention(unet, p, x, t, c))(
      params, sample, t, context)
  np.testing.assert_allclose(out, plain, rtol=0, atol=1e-5 * np.abs(plain).max())
  # only_cross_attention: attn1 attends to the text too in the down/up blocks (2 cross-attention
  # levels × (2 down + 3 up layers)); the mid block's attn1 self-attends.
  assert len(maps) == 2 * (2 * 2 + 2 * 3) + 1
  first = maps["down_blocks_0/attentions_0/transformer_blocks_0/attn1"]
  assert first.shape == (2, 2, 64, 5) and first.dtype == jnp.float32
  assert maps["mid_block/attentions_0/transformer_blocks_0/attn2"].shape == (2, 2, 4, 5)
  assert "mid_block/attentions_0/transformer_blocks_0/attn1" not in maps
  for probs in maps.values():
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, rtol=1e-5)
  # Capture off: no "intermediates" are produced at all.
  state = jax.eval_shape(lambda: unet.apply({"params": params}, sample, t, context,
                                            mutable=["intermediates"])[1])
  assert not state.get("intermediates")
