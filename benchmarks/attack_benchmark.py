r"""ATM attack speed: this project's population attack vs the published one-prompt PyTorch loop.

  python benchmarks/attack_benchmark.py --prompts=8 --steps=50 --iters=3
  python benchmarks/attack_benchmark.py --prompts=8 --steps=50 --depths=last,4,all_remat

Both sides run the same ATM iteration (arXiv 2306.02583; jaxdiffattack/attacks/atm.py) on the same
toy model (the shipped toy SD, toy CLIP zero-shot judge): Gumbel-softmax over θ [L, V] → token
mix → text encoder → DDIM sampler with CFG (gradient through the chosen depth) → VAE → CLIP margin
hinge − λ_sim · similarity → Adam step with frozen positions zeroed.
  * JAX: P prompts at once, one compiled step (`Attack.compile`), sharded over the local devices.
  * PyTorch: a re-implementation of the released code's loop — one prompt at a time, batch 1, the
    first S − 1 steps under `torch.no_grad()` and the last with autograd — on the toy weights
    converted to the diffusers/transformers PyTorch modules. Its first iteration is checked
    against the JAX loss on the same Gumbel noise and seed vector (`parity` in the output).
Reported, in one process: compile time apart from steady state; attack prompt-iterations per
second for each gradient depth and for PyTorch; their ratio; and XLA's compiled memory analysis
of one step per depth (temporary bytes per prompt: the activations kept for the backward pass).
"""

import json
import pathlib
import sys
import time

from absl import app
from absl import flags
import flax
import jax
import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT / "configs"))

# pylint: disable=g-import-not-at-top,wrong-import-position
import atm as atm_config
from jaxdiffattack import sampler as sampler_lib
from jaxdiffattack import sharding
from jaxdiffattack.attacks import atm
from jaxdiffattack.attacks import job as job_lib
from jaxdiffattack.attacks import step as step_lib
from jaxdiffattack.models import convert_diffusers
from jaxdiffattack.models import convert_transformers
from jaxdiffattack.models import unet as unet_lib
from jaxdiffattack.models import vae as vae_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

_PROMPTS = flags.DEFINE_integer("prompts", 8, "Prompts attacked at once by JAX (P).")
_STEPS = flags.DEFINE_integer("steps", 50, "Denoising steps (the paper: 50).")
_ITERS = flags.DEFINE_integer("iters", 3, "Timed attack iterations per side.")
_DEPTHS = flags.DEFINE_list("depths", ["last", "all_remat"],
                            "JAX gradient depths: last | K | all | all_remat.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch one-prompt loop.")
_TORCH_PROMPTS = flags.DEFINE_integer("torch_prompts", 2, "Prompts timed in PyTorch.")
_TORCH_THREADS = flags.DEFINE_list(
    "torch_threads", ["1", "2"], "PyTorch intra-op thread counts to time (the best is compared: "
    "on a shared, oversubscribed CPU, OpenMP's spinning makes 2 threads far slower than 1).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")


def setup(num_steps: int, prompts: int):
  """The toy attack job's pieces: loaded model, scorers and the first P short prompts."""
  config = atm_config.get_config("toy")
  config.num_steps = num_steps
  config.prompt_sets = {"short": "short"}
  config.max_prompts = prompts
  job = job_lib.Job(config, pathlib.Path("/nonexistent"))
  data = job.prepare("short", "short")
  return config, job, data


def depth_settings(settings: atm.Settings, depth: str) -> atm.Settings:
  import dataclasses  # pylint: disable=g-import-not-at-top
  grad_steps = job_lib.grad_steps_of(depth.replace("_remat", ""), _STEPS.value)
  return dataclasses.replace(settings, grad_steps=grad_steps, remat=depth.endswith("_remat"))


def time_jax(config, job, data, depth: str) -> dict:
  attack = atm.Attack.build(job.sd, depth_settings(job.settings, depth), job.scoring.score_fn,
                            "attack/margin", scheduler=config.scheduler, num_steps=_STEPS.value,
                            latent_shape=job.latent_shape)
  compiled = attack.compile(job.mesh)
  index = step_lib.pad_index(np.arange(len(data.prompt_set)), job.mesh.size)
  prompts = jax.tree_util.tree_map(lambda a: sharding.put_population(a, job.mesh),
                                   data.prompts(index))
  key = data.purpose_key(0)
  state = compiled.init(data.encoded.ids[index])
  memory = compiled.step.lower(job.params, state, prompts, key).compile().memory_analysis()
  start = time.perf_counter()
  state, _ = compiled.step(job.params, state, prompts, key)
  jax.block_until_ready(state)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(_ITERS.value):
    state, metrics = compiled.step(job.params, state, prompts, key)
  jax.block_until_ready((state, metrics))
  elapsed = time.perf_counter() - start
  p = len(index)
  out = {"depth": depth, "prompts": p, "compile_and_first_s": compile_s,
         "prompt_iterations_per_s": p * _ITERS.value / elapsed,
         "s_per_iteration": elapsed / _ITERS.value}
  if memory is not None:
    out.update(temp_bytes=int(memory.temp_size_in_bytes),
               argument_bytes=int(memory.argument_size_in_bytes),
               output_bytes=int(memory.output_size_in_bytes),
               temp_mb_per_prompt=memory.temp_size_in_bytes / p / 2**20)
  return out


class TorchAttack:
  """The published loop (released code, `whitebox_attack.py`) in PyTorch on the toy weights."""

  def __init__(self, config, job, data):
    # pylint: disable=g-import-not-at-top
    import diffusers
    import torch
    import transformers
    # pylint: enable=g-import-not-at-top
    self.torch = torch
    torch.manual_seed(0)
    sd, params = job.sd, job.params
    host = jax.tree_util.tree_map(np.asarray, params)
    flat = lambda tree: flax.traverse_util.flatten_dict(flax.core.unfreeze(tree))

    def filled(model, state):   # every weight of the PyTorch module comes from the JAX params
      missing, unexpected = model.load_state_dict(
          {k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
      if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise ValueError(f"weights do not fit {type(model).__name__}: missing {missing}, "
                         f"unexpected {unexpected}")
      return model.eval()

    fused = host["fused"]["sd"]
    self.unet = filled(diffusers.UNet2DConditionModel.from_config(
        unet_lib.config_json(sd.unet.config)), convert_diffusers.to_pytorch(flat(fused["unet"])))
    self.vae = filled(diffusers.AutoencoderKL.from_config(vae_lib.config_json(sd.vae.config)),
                      convert_diffusers.to_pytorch(flat(fused["vae"])))
    text_cfg = convert_transformers.config_dict("clip_text", sd.text_encoder.config)
    self.text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_cfg))
    self.text = filled(self.text, convert_transformers.tree_to_pytorch(
        flat(host["text_encoder"]), self.text.state_dict(), "clip_text", sd.text_encoder.config))
    clip_scorer = job.scoring.roles["attack"].classifiers[0]
    clip_cfg = transformers.CLIPConfig(**convert_transformers.config_dict(
        "clip", clip_scorer.model.config))
    score_p = host["fused"]["score"][clip_scorer.name]
    self.clip = transformers.CLIPModel(clip_cfg)
    self.clip = filled(self.clip, convert_transformers.tree_to_pytorch(
        flat(score_p["model"]), self.clip.state_dict(), "clip", clip_scorer.model.config))
    self.class_emb = torch.from_numpy(np.asarray(score_p["class_emb"], np.float32))
    self.logit_scale = float(np.exp(score_p["model"]["logit_scale"]))
    for module in (self.unet, self.vae, self.text, self.clip):
      module.requires_grad_(False)
    self.table = torch.from_numpy(np.asarray(
        host["text_encoder"]["text_model"]["embeddings"]["token_embedding"]["embedding"]))
    self.uncond = torch.from_numpy(np.asarray(host["uncond"]))[None]
    self.scheduler = diffusers.DDIMScheduler.from_config(sd.scheduler_config)
    self.config, self.job, self.data, self.sd = config, job, data, sd
    self.scaling = sd.scaling_factor

  def encode(self, embeds):
    torch = self.torch
    tm = getattr(self.text, "text_model", self.text)   # transformers 4 nests the tower; 5 does not
    positions = torch.arange(embeds.shape[1])[None]
    hidden = tm.embeddings(inputs_embeds=embeds, position_ids=positions)
    length = embeds.shape[1]   # CLIP's causal mask, additive (the same in transformers 4 and 5)
    mask = torch.full((length, length), torch.finfo(hidden.dtype).min).triu(1)[None, None]
    hidden = tm.encoder(inputs_embeds=hidden, attention_mask=mask).last_hidden_state
    return tm.final_layer_norm(hidden)

  def loss(self, theta, p: int, gumbels, latents):
    torch, s = self.torch, self.job.settings
    ids = torch.from_numpy(self.data.encoded.ids[p]).long()
    free = torch.from_numpy(self.data.free[p])
    soft = torch.softmax((theta + gumbels) / s.tau, dim=-1)
    weights = torch.where(free[:, None], soft,
                          torch.nn.functional.one_hot(ids, theta.shape[-1]).float())
    cond = self.encode((weights @ self.table)[None])
    context = torch.cat([self.uncond, cond])
    self.scheduler.set_timesteps(_STEPS.value)
    z = latents[None] * self.scheduler.init_noise_sigma
    timesteps = self.scheduler.timesteps
    for k, t in enumerate(timesteps):
      last = k == len(timesteps) - 1
      with torch.set_grad_enabled(last):
        x = self.scheduler.scale_model_input(torch.cat([z, z]), t)
        eps = self.unet(x, t, encoder_hidden_states=context if last else context.detach()).sample
        eps_u, eps_c = eps.chunk(2)
        eps = eps_u + s.guidance_scale * (eps_c - eps_u)
        z = self.scheduler.step(eps, t, z).prev_sample
    images = (self.vae.decode(z / self.scaling).sample / 2 + 0.5).clamp(0, 1)
    pixels = (images - 0.5) / 0.5            # the toy CLIP processor at its own 32×32 size
    emb = self.clip.get_image_features(pixel_values=pixels)
    emb = emb if isinstance(emb, self.torch.Tensor) else emb.pooler_output   # transformers 5
    emb = emb / emb.norm(dim=-1, keepdim=True)
    logits = self.logit_scale * emb @ self.class_emb.T
    label = int(self.data.prompt_set.labels[p])
    others = torch.cat([logits[0, :label], logits[0, label + 1:]])
    margin = logits[0, label] - others.max()
    ref = torch.from_numpy(self.data.reference[p])
    w = torch.from_numpy(self.data.weights[p])
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)
    # The released crop: the first and last position dropped on both sides (similarity.py).
    sim = (w[1:-1] * (unit(ref) @ unit(cond[0]).T)[1:-1, 1:-1].max(-1).values).sum()
    return torch.clamp(margin + s.kappa, min=0) - s.lam_sim * sim

  def noise(self, p: int, iters: int, noise_key) -> list:
    """The JAX side's Gumbel noise and seed vector of prompt p for each iteration (as tensors)."""
    out = []
    for i in range(iters):
      g, z = atm.iteration_noise(noise_key, np.array([p]), i, 1,
                                 (self.data.encoded.ids.shape[1], self.table.shape[0]),
                                 self.job.latent_shape)
      out.append((self.torch.from_numpy(np.asarray(g[0, 0])),
                   self.torch.from_numpy(np.asarray(z[0, 0]))))
    return out

  def init(self, p: int):
    ids = self.data.encoded.ids[p]
    theta = self.torch.zeros(len(ids), self.table.shape[0])
    theta[self.torch.arange(len(ids)), self.torch.from_numpy(ids).long()] = (
        self.job.settings.init_logit)
    return theta.requires_grad_(True)

  def gradient(self, p: int, noise, theta: np.ndarray) -> tuple[float, np.ndarray]:
    """Loss and d loss / d θ [L, V] of prompt p's first iteration at θ."""
    theta = self.torch.from_numpy(np.array(theta, np.float32)).requires_grad_(True)
    loss = self.loss(theta, p, *noise)
    loss.backward()
    return float(loss.detach()), theta.grad.numpy()

  def run(self, p: int, noise: list) -> list[float]:
    torch, s = self.torch, self.job.settings
    theta = self.init(p)
    opt = torch.optim.Adam([theta], lr=s.lr)
    frozen = torch.from_numpy(~self.data.free[p])
    losses = []
    for g, z in noise:
      opt.zero_grad()
      loss = self.loss(theta, p, g, z)
      loss.backward()
      theta.grad[frozen] = 0
      opt.step()
      losses.append(float(loss.detach()))
    return losses


def time_torch(config, job, data) -> dict:
  ref = TorchAttack(config, job, data)
  key = data.purpose_key(0)
  # Parity: the first iteration's loss and gradient of prompt 0 on both sides, same noise, at
  # θ = 2 at the clean tokens (less saturated than 15, so float32 cancellation in the softmax
  # gradient does not hide a difference).
  theta = atm.init_logits(data.encoded.ids[:1], job.attack.vocab_size, 2.0)
  jax_loss, jax_grad = jax.value_and_grad(lambda t: job.attack.losses(
      t, job.params, data.prompts(np.array([0])), key, 0)[0])(theta)
  jax_loss, jax_grad = float(jax_loss), np.asarray(jax_grad)[0]
  torch_loss, torch_grad = ref.gradient(0, ref.noise(0, 1, key)[0], np.asarray(theta)[0])
  free = data.free[0]
  grad_error = float(np.abs(jax_grad[free] - torch_grad[free]).max() /
                     np.abs(torch_grad[free]).max())
  n = max(1, min(_TORCH_PROMPTS.value, len(data.prompt_set)))
  noise = [ref.noise(p, _ITERS.value, key) for p in range(n)]
  rates = {}
  for threads in _TORCH_THREADS.value:
    ref.torch.set_num_threads(int(threads))
    ref.run(0, noise[0][:1])                       # warm-up at this thread count
    start = time.perf_counter()
    for p in range(n):
      ref.run(p, noise[p])
    rates[int(threads)] = n * _ITERS.value / (time.perf_counter() - start)
  best = max(rates, key=rates.get)
  return {"prompt_iterations_per_s": rates[best], "prompts_timed": n, "threads": best,
          "rate_by_threads": rates,
          "parity": {"jax_loss": jax_loss, "torch_loss": torch_loss,
                     "relative_difference": abs(jax_loss - torch_loss) / abs(jax_loss),
                     "gradient_max_error_relative_to_max": grad_error}}


def main(argv):
  del argv
  config, job, data = setup(_STEPS.value, _PROMPTS.value)
  result = {"devices": [str(d) for d in jax.devices()], "steps": _STEPS.value,
            "iters": _ITERS.value, "jax": [time_jax(config, job, data, d) for d in _DEPTHS.value]}
  if _TORCH.value:
    result["torch"] = time_torch(config, job, data)
    for r in result["jax"]:
      r["speedup_vs_torch"] = (r["prompt_iterations_per_s"] /
                               result["torch"]["prompt_iterations_per_s"])
  for r in result["jax"]:
    print(f"JAX  depth {r['depth']:>10}: {r['prompt_iterations_per_s']:.3f} prompt-iterations/s "
          f"(P={r['prompts']}, compile+first {r['compile_and_first_s']:.1f} s)"
          + (f", temp {r['temp_mb_per_prompt']:.1f} MB/prompt" if "temp_mb_per_prompt" in r else "")
          + (f", {r['speedup_vs_torch']:.2f}x PyTorch" if "speedup_vs_torch" in r else ""))
  if "torch" in result:
    t = result["torch"]
    print(f"PyTorch one prompt at a time, last step: {t['prompt_iterations_per_s']:.3f} "
          f"prompt-iterations/s ({t['threads']} threads; by threads {t['rate_by_threads']}); "
          f"first-iteration loss JAX {t['parity']['jax_loss']:.4f} vs "
          f"PyTorch {t['parity']['torch_loss']:.4f}, gradient max error "
          f"{t['parity']['gradient_max_error_relative_to_max']:.2e} of its max")
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
  app.run(main)
