r"""Load time of an SD1.5-shaped text encoder from PyTorch safetensors: the project's loader vs
transformers' Flax path, side by side in one run.

  python benchmarks/text_encoder_load_benchmark.py [--repeats=3] [--out=FILE.json]

The checkpoint is SD1.5's `text_encoder/` shape (CLIP ViT-L/14 text tower: 12 layers, width 768,
vocabulary 49408, 123 M parameters, 492 MB float32) with random weights, written once into a temp
directory by PyTorch transformers' `CLIPTextModel.save_pretrained` (as hub checkpoints ship).
Timed, each until the params are on the device (`block_until_ready`):
  * new: `convert_transformers.load_text_encoder` — config.json → typed config, expected shapes
    by `jax.eval_shape`, tensors renamed/transposed straight into the tree;
  * old: transformers' `FlaxCLIPTextModel.from_pretrained(dir, from_pt=True)` — how the project
    loaded safetensors before (it initialises random weights first, then converts); needs
    transformers < 5, skipped otherwise.
Both run `--repeats` times alternately (the first run of each includes one-off import/trace
costs: reported apart as `first_s`); the median of the rest is `median_s`. The hidden states of
both on the same ids are compared (max |Δ|) so the two loads are known to be the same model.
"""

import importlib.util
import json
import statistics
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffattack import io
from jaxdiffattack.models import convert_transformers

_REPEATS = flags.DEFINE_integer("repeats", 3, "Loads per loader (the first is reported apart).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON here.")

# SD1.5's text_encoder/config.json (openai/clip-vit-large-patch14's text tower).
SD15_TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
    layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2, pad_token_id=1, projection_dim=768)


def write_checkpoint(directory) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD15_TEXT_ENCODER))
  model.save_pretrained(directory, safe_serialization=True)


def load_new(directory):
  module, params = convert_transformers.load_text_encoder(directory)
  jax.block_until_ready(params)
  return lambda ids: module.apply({"params": params}, ids).last_hidden_state


def load_old(directory):
  from transformers import FlaxCLIPTextModel  # pylint: disable=g-import-not-at-top
  model = FlaxCLIPTextModel.from_pretrained(str(directory), from_pt=True, local_files_only=True)
  jax.block_until_ready(model.params)
  return lambda ids: model(ids).last_hidden_state


def old_available() -> bool:
  return importlib.util.find_spec("transformers.models.clip.modeling_flax_clip") is not None


def main(argv):
  del argv
  loaders = {"new": load_new}
  if old_available():
    loaders["old"] = load_old
  else:
    logging.warning("transformers has no Flax CLIP: timing the new loader only")
  times = {name: [] for name in loaders}
  with tempfile.TemporaryDirectory() as directory:
    t0 = time.perf_counter()
    write_checkpoint(directory)
    logging.info("wrote the SD1.5-shaped checkpoint in %.1f s", time.perf_counter() - t0)
    encoders = {}
    for _ in range(_REPEATS.value):
      for name, load in loaders.items():
        t0 = time.perf_counter()
        encoders[name] = load(directory)
        times[name].append(time.perf_counter() - t0)
        logging.info("%s: %.2f s", name, times[name][-1])
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 49408, (2, 77)), jnp.int32)
  hidden = {name: np.asarray(encode(ids)) for name, encode in encoders.items()}
  result = {
      "machine": f"{jax.device_count()} × {jax.devices()[0].device_kind}",
      "checkpoint": "SD1.5 text encoder shape, random float32 safetensors (123 M parameters)",
      "repeats": _REPEATS.value,
      "loaders": {name: {"first_s": round(t[0], 3),
                         "median_s": round(statistics.median(t[1:] or t), 3)}
                  for name, t in times.items()},
  }
  if "old" in hidden:
    result["max_abs_diff_hidden_states"] = float(np.max(np.abs(hidden["new"] - hidden["old"])))
    result["speedup_median"] = round(result["loaders"]["old"]["median_s"]
                                     / result["loaders"]["new"]["median_s"], 2)
  print(json.dumps(result, indent=2))
  if _OUT.value:
    io.write_json(_OUT.value, result)


if __name__ == "__main__":
  app.run(main)
