"""Adversarial-token space: one extra input token embedding appended to the prompt (SAGE §5).

SAGE finds that "by appending a single adversarial token embedding to an input prompt we can
generate a variety of specified target objects, while only minimally affecting the CLIP score".
The solution x [D_tok] parametrises the token e = μ + σ · x (μ, σ: mean and standard deviation of
the text encoder's token-embedding table, so x ~ N(0, I) is a table-like embedding); it is inserted
just before the prompt's end-of-text token ("a photo of a dog <e>"), the rest shifting right by one,
and the text encoder runs on the result. Constraint: ‖e‖ ≤ max_norm · max_v ‖E_v‖ (the largest real
token's norm by default), by projection, so every member satisfies it.

The search starts from `config.token.init`: "mean" (x = 0, e = μ) or a word, whose first token's
embedding is used. Objectives are targeted — aux["target"] is the class to be drawn
(`config.target_labels`); success is the evaluator seeing it. Reported beside the verdict: the CLIP
score of the image against the *clean* prompt (from the scorer), and the text similarity of the
pooled text state with the token to the clean one.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import text
from jaxdiffattack.errors import check
from jaxdiffattack.search.spaces import base
from jaxdiffattack.search.spaces.base import Decoded
from jaxdiffattack.search.spaces.base import Space


class TokenSpace(Space):
  name = "token"

  def __init__(self, config, sd, params, targets, key):
    super().__init__(config, sd, params, targets, key)
    self.cfg = config.token
    check(self.cfg.max_norm > 0, "token.max_norm", self.cfg.max_norm, "use a number > 0")
    length = self.ids.shape[1]
    check(int(self.clean_eos.max()) < length - 1, "template", config.template,
          f"leaves no room for an extra token within {length} tokens; shorten the prompts")
    table = np.asarray(text.token_embedding_table(sd, params["text_encoder"]), np.float32)
    self.mean = table.mean(axis=0)                                          # [D_tok]
    self.std = float(table.std())
    self.max_norm = float(self.cfg.max_norm * np.linalg.norm(table, axis=1).max())
    self.num_dims = table.shape[1]
    if self.cfg.init == "mean":
      self.start = np.zeros(self.num_dims, np.float32)
    else:
      ids = sd.tokenizer(self.cfg.init, add_special_tokens=False)["input_ids"]
      check(len(ids) > 0, "token.init", self.cfg.init, "use 'mean' or a word")
      self.start = ((table[ids[0]] - self.mean) / self.std).astype(np.float32)
    self.params |= {"embeds": np.asarray(text.embed_tokens(sd, params["text_encoder"], self.ids),
                                         np.float32)}                      # [T, L, D_tok]

  def init_means(self) -> np.ndarray:
    return np.broadcast_to(self.start, (len(self.targets), self.num_dims)).copy()

  def sample_prior(self, key):
    return jax.random.normal(key, (self.num_dims,))

  def token(self, x: jax.Array) -> jax.Array:
    """Solutions [M, n] → token embeddings [M, D_tok], norm-projected."""
    e = self.mean[None] + self.std * x
    norm = jnp.linalg.norm(e, axis=1, keepdims=True)
    return e * jnp.minimum(1.0, self.max_norm / jnp.maximum(norm, 1e-12))

  def project(self, params, x, t):
    """x whose token embedding is inside the norm bound (the projected token, in x units)."""
    del params, t
    return (self.token(x) - self.mean[None]) / self.std

  def encode(self, tokens, t) -> np.ndarray:
    del t
    return ((np.asarray(tokens, np.float64) - self.mean) / self.std).astype(np.float32)

  def insert(self, params, tokens: jax.Array, t) -> jax.Array:
    """Input embeddings [M, L, D_tok]: the clean prompt's with `tokens` before end-of-text."""
    clean = params["embeds"][t]                                             # [L, D_tok]
    position = jnp.arange(clean.shape[0])[:, None]                          # [L, 1]
    eos = params["clean_eos"][t]
    shifted = jnp.concatenate([clean[:1], clean[:-1]])                      # row i: clean[i − 1]
    rows = jnp.where(position < eos, clean, shifted)                        # [L, D_tok]
    return jnp.where((position == eos)[None], tokens[:, None], rows[None])

  def decode(self, params, x, t) -> Decoded:
    tokens = self.token(x)
    m = tokens.shape[0]
    cond = text.encode_token_embeddings(self.sd, params["text"], self.insert(params, tokens, t))
    eos = jnp.full(m, params["clean_eos"][t] + 1)
    metrics = {"token_norm_ratio": jnp.linalg.norm(tokens, axis=1) / self.max_norm,
               "text_similarity": base.row_cosine(base.pooled(cond, eos),
                                                  params["clean_pooled"][t])}
    return Decoded(self._fixed_latents(params, t, m), cond, jnp.zeros(m), jnp.ones(m, bool),
                   metrics)

  def artifacts(self, x, t) -> dict:
    decoded = self.decode_one(x, t)
    return {"token.npy": np.asarray(self.token(jnp.asarray(x, jnp.float32)[None])[0]),
            "embedding.npy": decoded.cond[0], "latent.npy": decoded.latents[0],
            "prompt.txt": f"{self.prompts[t]} <adversarial token> (target: "
                          f"{self.targets[t].target_label})"}
