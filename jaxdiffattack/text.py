"""Text conditioning: prompts → token ids → CLIP text-encoder hidden states (SD's conditioning).

Stable Diffusion conditions its UNet on the CLIP text encoder's last hidden state over the padded
token sequence (Rombach et al. 2022, §3.3). Three entry levels, so searches can work at any of them
without re-tokenising:
  * `tokenize` / `encode_prompts`: strings → ids [P, L] → hidden states [P, L, D];
  * `embed_tokens` + `encode_token_embeddings`: input token embeddings [P, L, D_tok] → hidden
    states, differentiable — for soft tokens (ATM's Gumbel-softmax mixture of the embedding table,
    arXiv 2306.02583 §3) and adversarial token embeddings (SAGE, arXiv 2306.00974);
  * precomputed hidden states [P, L, D] go to the sampler directly (prompt-embedding search).

`with_clip_skip(sd, k)` makes every level use the hidden state k layers before the last, with the
final LayerNorm (diffusers' `clip_skip`; see `jaxdiffattack.models.clip` for how SD2 checkpoints
already express their penultimate layer in config.json).
"""

import dataclasses
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack.errors import UserError
from jaxdiffattack.models import StableDiffusion
from jaxdiffattack.models import clip


def _check_prompts(prompts: Sequence[str]) -> list[str]:
  if isinstance(prompts, str) or not isinstance(prompts, Sequence):
    raise UserError(f"prompts must be a list of strings, got {type(prompts).__name__}")
  if not all(isinstance(p, str) for p in prompts):
    raise UserError("prompts must be a list of strings; found a non-string entry")
  return list(prompts)


def tokenize(sd: StableDiffusion, prompts: Sequence[str]) -> np.ndarray:
  """Token ids [P, L] padded to the model's max length; warns about truncated prompts."""
  prompts = _check_prompts(prompts)
  max_length = sd.max_length
  full = sd.tokenizer(prompts, padding=False, truncation=False)["input_ids"]
  for prompt, ids in zip(prompts, full):
    if len(ids) > max_length:
      logging.warning("prompt truncated to %d tokens, %d tokens dropped: %r",
                      max_length, len(ids) - max_length, prompt)
  ids = sd.tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                     return_tensors="np")["input_ids"]
  return ids.astype(np.int32)


def encode_ids(sd: StableDiffusion, text_params, input_ids: jax.Array) -> jax.Array:
  """CLIP text hidden states [P, L, D] for token ids [P, L] (jit-able; no padding mask, as
  diffusers' SD pipelines)."""
  return sd.text_encoder.apply({"params": text_params}, input_ids).last_hidden_state


def encode_prompts(sd: StableDiffusion, text_params, prompts: Sequence[str]) -> jax.Array:
  """Hidden states [P, L, D] for a list of prompt strings."""
  return _encode_ids_jit(sd, text_params, jnp.asarray(tokenize(sd, prompts)))


_encode_ids_jit = jax.jit(encode_ids, static_argnums=0)


def token_embedding_table(sd: StableDiffusion, text_params) -> jax.Array:
  """The text encoder's input embedding matrix [V, D_tok]."""
  del sd
  return text_params["text_model"]["embeddings"]["token_embedding"]["embedding"]


def embed_tokens(sd: StableDiffusion, text_params, input_ids: jax.Array) -> jax.Array:
  """Input token embeddings [P, L, D_tok] (no position embedding) for ids [P, L]."""
  return jnp.take(token_embedding_table(sd, text_params), input_ids, axis=0)


def encode_token_embeddings(sd: StableDiffusion, text_params, token_embeds: jax.Array) -> jax.Array:
  """Hidden states [P, L, D] from input token embeddings [P, L, D_tok]; differentiable.

  `encode_token_embeddings(sd, p, embed_tokens(sd, p, ids)) == encode_ids(sd, p, ids)`.
  """
  return sd.text_encoder.apply({"params": text_params}, token_embeds,
                               method="encode_embeddings")


def with_clip_skip(sd: StableDiffusion, clip_skip: int) -> StableDiffusion:
  """`sd` whose text encoder skips its last `clip_skip` layers (diffusers' `clip_skip`: the
  hidden state clip_skip layers before the last, then the final LayerNorm); same params."""
  encoder = sd.text_encoder
  clip.check_clip_skip(clip_skip, encoder.config, f"{sd.source} text_encoder")
  return dataclasses.replace(sd, text_encoder=encoder.clone(clip_skip=clip_skip))
