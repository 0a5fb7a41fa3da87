r"""ATM attack speed at real model shapes: the population attack (JAX) vs a one-prompt PyTorch loop.

  # JAX side: SD 2.1-shaped random weights at 256² (the paper's setting), 8 prompts at once
  python benchmarks/attack_scale_benchmark.py --side=jax --model=sd21 --image_size=256 \
      --prompts=8 --steps=50 --depths=last,all_remat --out=attack_jax.json
  # PyTorch side (its own process: each framework gets the GPU alone)
  python benchmarks/attack_scale_benchmark.py --side=torch --model=sd21 --image_size=256 \
      --steps=50 --torch_prompts=2 --out=attack_torch.json
  # CPU rehearsal: the same code at toy width
  python benchmarks/attack_scale_benchmark.py --side=jax --model=sd21_tiny --image_size=16 \
      --prompts=2 --steps=2 --iters=1 --dtype=float32

One ATM iteration (arXiv 2306.02583; jaxdiffattack/attacks/atm.py) per prompt: Gumbel-softmax over
θ [L, V] (the full 49,408-token vocabulary at `sd21`) → token mix → the text tower (23 layers, 1024
wide) → DDIM with CFG → VAE decode → margin hinge − λ_sim · similarity → Adam. Both sides use
random weights of the same shapes (`jaxdiffattack.models.random_init`): speed, not parity, is
measured here (benchmarks/attack_benchmark.py checks loss and gradient parity on the toy world).
The judge is the model-free image-statistics scorer (`scoring.synthetic_scoring`, differentiable),
so a CLIP judge's cost (small beside 50 UNet calls) is left out on both sides.
  * JAX (`--side=jax`): P prompts at once in one compiled step (`Attack.compile`) per gradient
    depth (`last`: the last step, as published; `K`; `all`; `all_remat`: every step,
    rematerialised); compile + first call apart from the steady iterations; XLA's compiled
    memory analysis of the step (temporary bytes per prompt).
  * PyTorch (`--side=torch`): the released code's loop — one prompt at a time, batch 1, the first
    S − 1 steps under `torch.no_grad()`, the last with autograd — with diffusers' UNet/VAE and
    transformers' CLIPTextModel built from the same configs, on CUDA when present.
Output: one JSON (`--out`) with prompt-iterations/s per depth or for the PyTorch loop.
"""

import dataclasses
import json
import pathlib
import time

from absl import app
from absl import flags
import numpy as np

_SIDE = flags.DEFINE_enum("side", "jax", ["jax", "torch"], "Which framework to time.")
_MODEL = flags.DEFINE_string("model", "sd21", "A shape of jaxdiffattack.models.random_init "
                             "with a text encoder (sd21, sd21_tiny).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 256, "Image side (latents: side / 8).")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Model dtype.")
_PROMPTS = flags.DEFINE_integer("prompts", 8, "Prompts attacked at once by JAX (P).")
_FREE = flags.DEFINE_integer("free_tokens", 8, "Token positions each prompt may change.")
_STEPS = flags.DEFINE_integer("steps", 50, "DDIM steps (the paper: 50).")
_ITERS = flags.DEFINE_integer("iters", 2, "Timed attack iterations (per depth / per prompt).")
_DEPTHS = flags.DEFINE_list("depths", ["last", "all_remat"],
                            "JAX gradient depths: last | K | all | all_remat.")
_TORCH_PROMPTS = flags.DEFINE_integer("torch_prompts", 2, "Prompts timed by the PyTorch loop.")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")

_GUIDANCE = 7.5


def prompt_ids(num: int, length: int, vocab: int, free: int, seed: int = 0):
  """Random prompts: ids [num, L] (BOS, `free` random tokens, EOS, EOS padding) and the
  positions the attack may change [num, L] (the random tokens)."""
  rng = np.random.default_rng(seed)
  ids = np.full((num, length), vocab - 1, np.int32)          # EOS / padding
  ids[:, 0] = vocab - 2                                        # BOS
  ids[:, 1:1 + free] = rng.integers(0, vocab - 2, (num, free))
  mask = np.zeros((num, length), bool)
  mask[:, 1:1 + free] = True
  return ids, mask


def latent_shape(sd) -> tuple[int, int, int]:
  side = _IMAGE_SIZE.value // sd.vae_scale_factor
  return (sd.latent_channels, side, side)


def time_jax() -> dict:
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from jaxdiffattack import sampler as sampler_lib
  from jaxdiffattack import scoring as scoring_lib
  from jaxdiffattack import sharding
  from jaxdiffattack import text
  from jaxdiffattack.attacks import atm
  from jaxdiffattack.attacks import job as job_lib
  from jaxdiffattack.models import random_init
  # pylint: enable=g-import-not-at-top
  sd, params = random_init.random_stable_diffusion(_MODEL.value, _DTYPE.value)
  mesh = sharding.make_mesh()
  p = -(-_PROMPTS.value // mesh.size) * mesh.size
  length = random_init.SHAPES[_MODEL.value]["text_length"]
  vocab = int(sd.text_encoder.config.vocab_size)
  ids, free = prompt_ids(p, length, vocab, _FREE.value)
  encode = jax.jit(lambda tp, i: text.encode_ids(sd, tp, i).astype(jnp.float32))
  reference = np.asarray(encode(params["text_encoder"], ids))          # [P, L, D]
  uncond = encode(params["text_encoder"], np.array([[vocab - 2] + [vocab - 1] * (length - 1)]))[0]
  weights = free / free.sum(1, keepdims=True)
  prompts = atm.prompts_from(ids, free, np.arange(p) % 1000, np.arange(p), reference, weights)
  prompts = jax.tree_util.tree_map(lambda a: sharding.put_population(a, mesh), prompts)
  scoring = scoring_lib.synthetic_scoring()
  attack_params = sharding.put_replicated(
      {"text_encoder": params["text_encoder"], "uncond": uncond.astype(sd.dtype),
       "fused": sampler_lib.fused_params(params, scoring.params)}, mesh)
  key = jax.random.PRNGKey(0)
  rows = []
  for depth in _DEPTHS.value:
    settings = atm.Settings(grad_steps=job_lib.grad_steps_of(depth.replace("_remat", ""),
                                                             _STEPS.value),
                            remat=depth.endswith("_remat"), guidance_scale=_GUIDANCE)
    attack = atm.Attack.build(sd, settings, scoring.score_fn, "surrogate/margin",
                              scheduler="ddim", num_steps=_STEPS.value,
                              latent_shape=latent_shape(sd))
    compiled = attack.compile(mesh)
    state = compiled.init(prompts.ids)
    start = time.perf_counter()
    lowered = compiled.step.lower(attack_params, state, prompts, key).compile()
    compile_s = time.perf_counter() - start
    memory = lowered.memory_analysis()
    start = time.perf_counter()
    state, metrics = compiled.step(attack_params, state, prompts, key)
    jax.block_until_ready(state)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(_ITERS.value):
      state, metrics = compiled.step(attack_params, state, prompts, key)
    jax.block_until_ready((state, metrics))
    elapsed = time.perf_counter() - start
    row = {"depth": depth, "prompts": p, "compile_s": compile_s, "first_call_s": first_s,
           "s_per_iteration": elapsed / _ITERS.value,
           "prompt_iterations_per_s": p * _ITERS.value / elapsed,
           "loss_finite": bool(np.isfinite(np.asarray(metrics.loss)).all())}
    if memory is not None:
      row.update(temp_bytes=int(memory.temp_size_in_bytes),
                 argument_bytes=int(memory.argument_size_in_bytes),
                 temp_mb_per_prompt=memory.temp_size_in_bytes / p / 2**20)
    print(json.dumps(row))
    rows.append(row)
    del state, compiled, attack
  return {"side": "jax", "devices": [str(d) for d in jax.devices()], "jax": rows,
          "theta_mb_per_prompt": length * vocab * 4 / 2**20}


class TorchLoop:
  """The released code's loop (`whitebox_attack.py`): one prompt, batch 1, gradient through the
  last denoising step only, on diffusers/transformers modules of the same shapes."""

  def __init__(self):
    # pylint: disable=g-import-not-at-top
    import diffusers
    import torch
    import transformers
    from jaxdiffattack.models import convert_transformers
    from jaxdiffattack.models import random_init
    from jaxdiffattack.models import unet as unet_lib
    from jaxdiffattack.models import vae as vae_lib
    # pylint: enable=g-import-not-at-top
    self.torch = torch
    torch.manual_seed(0)
    self.device = "cuda" if torch.cuda.is_available() else "cpu"
    self.dtype = torch.bfloat16 if _DTYPE.value == "bfloat16" else torch.float32
    sd, _ = random_init.random_stable_diffusion(_MODEL.value, _DTYPE.value, abstract=True)
    self.sd = sd
    with torch.device(self.device):      # random init straight on the device
      self.unet = diffusers.UNet2DConditionModel.from_config(
          unet_lib.config_json(sd.unet.config))
      self.vae = diffusers.AutoencoderKL.from_config(vae_lib.config_json(sd.vae.config))
      text_cfg = convert_transformers.config_dict("clip_text", sd.text_encoder.config)
      self.text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_cfg))
    for module in (self.unet, self.vae, self.text):
      module.to(self.device, self.dtype).eval().requires_grad_(False)
    self.scheduler = diffusers.DDIMScheduler.from_config(sd.scheduler_config)
    self.length = random_init.SHAPES[_MODEL.value]["text_length"]
    self.vocab = int(sd.text_encoder.config.vocab_size)
    tm = getattr(self.text, "text_model", self.text)
    self.table = tm.embeddings.token_embedding.weight                 # [V, D]
    self.shape = latent_shape(sd)

  def encode(self, embeds):
    torch = self.torch
    tm = getattr(self.text, "text_model", self.text)   # transformers 4 nests the tower; 5 does not
    positions = torch.arange(embeds.shape[1], device=self.device)[None]
    hidden = tm.embeddings(inputs_embeds=embeds, position_ids=positions)
    n = embeds.shape[1]      # CLIP's causal mask, additive (the same in transformers 4 and 5)
    mask = torch.full((n, n), torch.finfo(hidden.dtype).min, device=self.device,
                      dtype=hidden.dtype).triu(1)
    hidden = tm.encoder(inputs_embeds=hidden, attention_mask=mask[None, None]).last_hidden_state
    return tm.final_layer_norm(hidden)

  def loss(self, theta, ids, free, reference, weights, label):
    torch = self.torch
    gumbels = -torch.log(-torch.log(torch.rand_like(theta).clamp_min(1e-20)))
    soft = torch.softmax(theta + gumbels, dim=-1)
    mix = torch.where(free[:, None], soft,
                      torch.nn.functional.one_hot(ids, self.vocab).float())
    cond = self.encode((mix.to(self.dtype) @ self.table)[None])
    context = torch.cat([self.uncond, cond])
    self.scheduler.set_timesteps(_STEPS.value, device=self.device)
    z = torch.randn((1,) + self.shape, device=self.device, dtype=self.dtype)
    timesteps = self.scheduler.timesteps
    for k, t in enumerate(timesteps):
      with torch.set_grad_enabled(k == len(timesteps) - 1):
        x = self.scheduler.scale_model_input(torch.cat([z, z]), t)
        out = self.unet(x, t, encoder_hidden_states=context).sample
        out_u, out_c = out.chunk(2)
        z = self.scheduler.step(out_u + _GUIDANCE * (out_c - out_u), t, z).prev_sample
    images = (self.vae.decode(z / self.sd.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    means = images.float().mean(dim=(2, 3))[0]                           # [3] channel means
    channel = label % 3
    others = torch.cat([means[:channel], means[channel + 1:]])
    margin = means[channel] - others.max()
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)
    sim = (weights * (unit(reference) @ unit(cond[0].float()).T)[:, 1:-1].max(-1).values).sum()
    return torch.clamp(margin + 30.0, min=0) - 4.0 * sim

  def run(self, ids, free, iters: int) -> list[float]:
    torch = self.torch
    ids_t = torch.from_numpy(ids).long().to(self.device)
    free_t = torch.from_numpy(free).to(self.device)
    with torch.no_grad():
      clean = torch.nn.functional.one_hot(ids_t, self.vocab).to(self.dtype)
      reference = self.encode((clean @ self.table)[None])[0].float()
    weights = free_t.float() / free_t.sum()
    theta = torch.zeros(self.length, self.vocab, device=self.device)
    theta[torch.arange(self.length), ids_t] = 15.0
    theta.requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.3)
    losses = []
    for _ in range(iters):
      opt.zero_grad()
      loss = self.loss(theta, ids_t, free_t, reference, weights, 0)
      loss.backward()
      theta.grad[~free_t] = 0
      opt.step()
      losses.append(float(loss.detach()))
    return losses

  def prepare_uncond(self):
    torch = self.torch
    with torch.no_grad():
      ids = torch.tensor([[self.vocab - 2] + [self.vocab - 1] * (self.length - 1)],
                         device=self.device)
      self.uncond = self.encode(self.table[ids])


def time_torch() -> dict:
  loop = TorchLoop()
  loop.prepare_uncond()
  n = max(1, _TORCH_PROMPTS.value)
  ids, free = prompt_ids(n, loop.length, loop.vocab, _FREE.value)
  start = time.perf_counter()
  loop.run(ids[0], free[0], 1)                           # warm-up (kernels, allocator)
  if loop.device == "cuda":
    loop.torch.cuda.synchronize()
  warmup_s = time.perf_counter() - start
  start = time.perf_counter()
  losses = [loop.run(ids[i], free[i], _ITERS.value) for i in range(n)]
  if loop.device == "cuda":
    loop.torch.cuda.synchronize()
  elapsed = time.perf_counter() - start
  out = {"side": "torch", "device": loop.device, "torch_dtype": str(loop.dtype),
         "torch_version": loop.torch.__version__, "prompts_timed": n, "warmup_s": warmup_s,
         "prompt_iterations_per_s": n * _ITERS.value / elapsed,
         "loss_finite": bool(np.isfinite(losses).all())}
  if loop.device == "cuda":
    out["peak_memory_bytes"] = int(loop.torch.cuda.max_memory_allocated())
  return out


def main(argv):
  del argv
  from jaxdiffattack.models import random_init  # pylint: disable=g-import-not-at-top
  if "text_encoder" not in random_init.SHAPES.get(_MODEL.value, {}):
    raise app.UsageError(f"--model={_MODEL.value!r}: use a shape with a text encoder "
                         f"({[k for k, v in random_init.SHAPES.items() if 'text_encoder' in v]})")
  result = {"model": _MODEL.value, "image_size": _IMAGE_SIZE.value, "steps": _STEPS.value,
            "dtype": _DTYPE.value, "iters": _ITERS.value, "guidance_scale": _GUIDANCE,
            "free_tokens": _FREE.value}
  result.update(time_jax() if _SIDE.value == "jax" else time_torch())
  print(json.dumps(result, indent=2))
  if _OUT.value:
    from jaxdiffattack import io  # pylint: disable=g-import-not-at-top
    io.write_json(pathlib.Path(_OUT.value), result)


if __name__ == "__main__":
  app.run(main)
