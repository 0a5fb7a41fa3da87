"""jaxdiffattack's AutoencoderKL against diffusers' PyTorch AutoencoderKL on tiny random configs.

Weights come from safetensors written by the PyTorch module itself; encode (posterior mean and
log-variance) and decode must agree within 1e-5 of the output scale in float32. Gradients are
checked against central differences in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack.models import weights

import tiny_sd

torch = pytest.importorskip("torch")

CONFIGS = {
    # SD's layout, scaled down: quant convs, mid-block attention, 2 levels.
    "sd": dict(block_out_channels=(16, 32), layers_per_block=2, norm_num_groups=8,
               latent_channels=4, sample_size=16,
               down_block_types=("DownEncoderBlock2D",) * 2,
               up_block_types=("UpDecoderBlock2D",) * 2),
    # The switches: no quant convs, no mid-block attention; 3 levels.
    "plain": dict(block_out_channels=(8, 16, 16), layers_per_block=1, norm_num_groups=4,
                  latent_channels=3, sample_size=16, use_quant_conv=False,
                  use_post_quant_conv=False, mid_block_add_attention=False,
                  down_block_types=("DownEncoderBlock2D",) * 3,
                  up_block_types=("UpDecoderBlock2D",) * 3),
}


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
  """{name: (torch module, directory)} with safetensors written by the torch module."""
  from diffusers import AutoencoderKL  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("vaes")
  out = {}
  for i, (name, config) in enumerate(CONFIGS.items()):
    torch.manual_seed(i)
    model = tiny_sd.perturb(AutoencoderKL(**config)).eval()
    model.save_pretrained(root / name, safe_serialization=True)
    out[name] = (model, root / name)
  return out


def _images(seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)


def _close(got, expected):
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encode_and_decode_match_pytorch(vaes, name):
  model, directory = vaes[name]
  vae, params = weights.load_diffusers_model("vae", directory)
  images = _images()
  with torch.no_grad():
    posterior = model.encode(torch.from_numpy(images)).latent_dist
    mean, logvar = posterior.mean.numpy(), posterior.logvar.numpy()
    decoded = model.decode(torch.from_numpy(mean)).sample.numpy()
  encode = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=vae.encode))
  decode = jax.jit(lambda p, z: vae.apply({"params": p}, z, method=vae.decode))
  got = encode(params, images)
  latent_side = 16 // 2 ** (len(CONFIGS[name]["block_out_channels"]) - 1)
  assert got.mean.shape == mean.shape == (2, CONFIGS[name]["latent_channels"], latent_side,
                                          latent_side)
  _close(got.mean, mean)
  _close(got.logvar, logvar)
  _close(decode(params, mean), decoded)
  assert decoded.shape == images.shape


def test_posterior_helpers(vaes):
  _, directory = vaes["sd"]
  vae, params = weights.load_diffusers_model("vae", directory)
  post = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=vae.encode))(params, _images(1))
  np.testing.assert_allclose(post.std, np.exp(0.5 * np.asarray(post.logvar)), rtol=1e-6)
  mean, var, logvar = (np.asarray(a, np.float64) for a in (post.mean, post.std ** 2, post.logvar))
  np.testing.assert_allclose(post.kl(), 0.5 * (mean ** 2 + var - 1 - logvar).sum((1, 2, 3)),
                             rtol=1e-5)
  draws = jax.vmap(post.sample)(jax.random.split(jax.random.PRNGKey(0), 200))
  np.testing.assert_allclose(draws.mean(0), post.mean, atol=4 * float(post.std.max()) / 10)


def test_older_attention_names_and_conv_layout_load(vaes, tmp_path):
  """Checkpoints written before diffusers renamed the VAE attention (query/key/value/proj_attn,
  some as 1×1 convs) load into the same params."""
  import shutil  # pylint: disable=g-import-not-at-top
  _, directory = vaes["sd"]
  _, params = weights.load_diffusers_model("vae", directory)
  state = weights.read_safetensors(directory / "diffusion_pytorch_model.safetensors")
  renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
  old = {}
  for name, value in state.items():
    for new, legacy in renames.items():
      if f".attentions.0.{new}." in name:
        name = name.replace(f".{new}.", f".{legacy}.")
        value = value[:, :, None, None] if value.ndim == 2 else value   # as a 1×1 conv
    old[name] = value
  assert sum(".query." in name for name in old) == 4      # weight, bias; encoder, decoder
  shutil.copy(directory / "config.json", tmp_path / "config.json")
  weights.write_safetensors(tmp_path / "diffusion_pytorch_model.safetensors", old)
  _, params_old = weights.load_diffusers_model("vae", tmp_path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params_old, params)


def test_gradients_match_finite_differences(vaes):
  """d(Σ w·decode(z)) / dz and d(Σ w·mean(x)) / dx along random directions (float64)."""
  _, directory = vaes["sd"]
  vae, params = weights.load_diffusers_model("vae", directory)
  rng = np.random.default_rng(3)
  with jax.enable_x64(True):
    vae64 = vae.clone(dtype=jnp.float64)
    params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    images = jnp.asarray(_images(2), jnp.float64)
    latents = jnp.asarray(rng.standard_normal((2, 4, 8, 8)))
    w_img = jnp.asarray(rng.standard_normal(images.shape))
    w_lat = jnp.asarray(rng.standard_normal(latents.shape))
    losses = {
        "decode": (jax.jit(lambda z: jnp.sum(w_img * vae64.apply(
            {"params": params64}, z, method=vae64.decode))), latents),
        "encode": (jax.jit(lambda x: jnp.sum(w_lat * vae64.apply(
            {"params": params64}, x, method=vae64.encode).mean)), images),
    }
    eps = 1e-5
    for loss, x0 in losses.values():
      grad = jax.grad(loss)(x0)
      direction = jnp.asarray(rng.standard_normal(x0.shape))
      numeric = (loss(x0 + eps * direction) - loss(x0 - eps * direction)) / (2 * eps)
      np.testing.assert_allclose(float(jnp.sum(grad * direction)), float(numeric), rtol=1e-6)
