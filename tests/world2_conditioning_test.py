"""Tests of world2/conditioning.py: the pair masks against the class list, the distances against
NumPy, and `separation` on the smoke world-2 export against direct recomputation and against a
UNet whose cross-attention cannot see the text (every eps distance 0)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffattack.world2 import conditioning
from jaxdiffattack.world2 import scene


def test_pair_masks_count_the_unordered_pairs_of_the_class_list():
  same_hue, same_shape = conditioning.pair_masks()
  names = [n.split(" ", 1) for n in scene.CLASSES]
  want_hue = sum(a[0] == b[0] and a[1] != b[1] for a, b in itertools.combinations(names, 2))
  want_shape = sum(a[0] != b[0] and a[1] == b[1] for a, b in itertools.combinations(names, 2))
  assert (int(same_hue.sum()), int(same_shape.sum())) == (want_hue, want_shape)
  assert not (same_hue & same_shape).any()
  assert not np.tril(same_hue).any() and not np.tril(same_shape).any()
  i, j = np.argwhere(same_hue)[0]
  assert scene.class_hue(i) == scene.class_hue(j) and scene.class_shape(i) != scene.class_shape(j)


def test_pair_distances_are_euclidean_over_root_size():
  x = np.random.default_rng(0).normal(size=(5, 3, 2, 2))
  d = conditioning.pair_distances(x)
  for a, b in itertools.combinations(range(5), 2):
    want = np.linalg.norm(x[a] - x[b]) / np.sqrt(12)
    np.testing.assert_allclose(d[a, b], want, rtol=1e-9)
    np.testing.assert_allclose(d[b, a], want, rtol=1e-9)
  np.testing.assert_allclose(np.diag(d), 0.0, atol=1e-6)


@pytest.fixture(scope="module")
def smoke_sd(world2_smoke):
  from jaxdiffattack.models import stable_diffusion  # pylint: disable=g-import-not-at-top
  workdir, _, _ = world2_smoke
  return stable_diffusion.load_stable_diffusion(str(workdir / "export" / "sd"))


@pytest.mark.slow
def test_separation_on_the_smoke_export(smoke_sd):
  sd, params = smoke_sd
  got = conditioning.separation(sd, params, num_latents=1, timesteps=(500,))
  same_hue, same_shape = conditioning.pair_masks()
  # Text: recompute one same-hue pair's last-word cosine and the mean of all pairs directly.
  states, eos = conditioning.text_states(sd, params, conditioning.class_prompts())
  last = states[np.arange(len(states)), eos - 1]
  unit = last / np.linalg.norm(last, axis=1, keepdims=True)
  want = np.mean([unit[a] @ unit[b] for a, b in np.argwhere(same_hue)])
  assert got["text"]["cos_last_word_same_hue"] == pytest.approx(want, abs=1e-4)
  # Eps: recompute the same-shape distance with the UNet called pair by pair.
  cfg = sd.unet.config
  x = jax.random.normal(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 500), 0),
                        (1, cfg.in_channels, cfg.sample_size, cfg.sample_size))
  pairs = np.argwhere(same_shape)[:6]
  eps = lambda c: np.asarray(sd.unet.apply({"params": params["unet"]}, x, jnp.array([500]),
                                           jnp.asarray(states[c:c + 1], jnp.float32)))
  direct = [np.linalg.norm(eps(a) - eps(b)) / np.sqrt(x.size) for a, b in pairs]
  full = conditioning.pair_distances(np.stack([eps(c)[0] for c in range(len(states))]))
  np.testing.assert_allclose([full[a, b] for a, b in pairs], direct, rtol=1e-3, atol=1e-6)
  assert got["eps"]["500"]["dist_same_shape"] == pytest.approx(
      float(full[same_shape].mean()), rel=1e-3, abs=1e-6)
  assert got["eps"]["500"]["dist_same_shape"] > 0
  # A UNet whose cross-attention keys and values are zero cannot read the text: every eps
  # distance is 0 while the text measures stay.
  blind = jax.tree_util.tree_map_with_path(
      lambda path, v: jnp.zeros_like(v) if any(getattr(k, "key", None) in ("to_k", "to_v")
                                               for k in path) and "attn2" in jax.tree_util.keystr(path)
      else v, params["unet"])
  deaf = conditioning.separation(sd, {**params, "unet": blind}, num_latents=1, timesteps=(500,))
  assert deaf["eps"]["500"]["dist_same_hue"] == pytest.approx(0.0, abs=1e-5)
  assert deaf["eps"]["500"]["dist_same_shape"] == pytest.approx(0.0, abs=1e-5)
  assert deaf["eps"]["500"]["dist_to_uncond"] == pytest.approx(0.0, abs=1e-5)
  assert deaf["text"] == got["text"]
