r"""Step rates of world 2's training stages (docs/world2_model_card.md, "Training budget").

  nice -n 0 python benchmarks/world2_train_rates.py --workdir /tmp/w2rates \
      --out docs/results/world2_train_rates.json

Runs every stage of configs/train_world2.py:timing (the full models and batch sizes, 2,000
scenes, `--steps` steps each, no checkpoints) through world2.train.run and times the last
`--timed` steps of each (after the compile and `steps - timed` warm steps): steps/s and the
wall hours the full config's num_steps would take *at the load of the measurement* (the
machine's load average is recorded: other jobs share its 2 cores, so on a busy machine these
are wall hours at a fraction of a core, not CPU hours), and the process's CPU seconds per step
(user + system of every thread, `time.process_time`) with the CPU hours of the full num_steps:
the budget of issue #23 counts CPU hours (sharing inflates them somewhat: caches, threads).
"""
import os
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from jaxdiffattack import variants
from jaxdiffattack.world2 import train

import evidence  # benchmarks/evidence.py (run as a script: benchmarks/ is on sys.path)

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/w2rates", "scratch workdir (rendered data kept)")
_OUT = flags.DEFINE_string("out", "", "results JSON")
_STEPS = flags.DEFINE_integer("steps", 25, "steps per stage")
_TIMED = flags.DEFINE_integer("timed", 20, "timed steps (the last ones)")
_STAGES = flags.DEFINE_string("stages", "vae,clip,unet,vae_tune,vit,resnet,robust,evaluator,clip_tune",
                              "stages")
_VARIANT = flags.DEFINE_string("variant", "timing", "config variants")


def main(argv):
  del argv
  config = variants.load_config("train_world2", _VARIANT.value)
  full = variants.load_config("train_world2", ",".join(v for v in _VARIANT.value.split(",") if v != "timing") or None)
  config.stages = _STAGES.value
  for name in train.parse_stages(config):
    if name != "export":
      config[name].num_steps = _STEPS.value
  train.STEP_TIMES = {}
  t0 = time.time()
  load0 = os.getloadavg()
  train.run(config, _WORKDIR.value)
  rows = {}
  for name, times in train.STEP_TIMES.items():
    t = np.asarray(times)  # [steps, (wall, cpu)]
    k = min(_TIMED.value, len(t) - 1)
    rate = k / (t[-1, 0] - t[-1 - k, 0])
    cpu_per_step = (t[-1, 1] - t[-1 - k, 1]) / k
    steps = int(full[name].num_steps)
    rows[name] = {"steps_per_s": round(float(rate), 3), "timed_steps": int(k),
                  "batch_size": int(full[name].batch_size), "full_num_steps": steps,
                  "est_wall_hours_at_this_load": round(steps / rate / 3600, 2),
                  "cpu_s_per_step": round(float(cpu_per_step), 3),
                  "est_cpu_hours": round(steps * cpu_per_step / 3600, 2)}
    logging.info("%s: %.3f steps/s -> %d steps in %.2f h", name, rate, steps, steps / rate / 3600)
  out = {"command": "nice -n 0 python benchmarks/world2_train_rates.py "
                    f"--variant={_VARIANT.value} --steps={_STEPS.value} --timed={_TIMED.value}",
         "variant": _VARIANT.value, "stages": rows,
         "total_est_wall_hours_at_this_load": round(
             sum(r["est_wall_hours_at_this_load"] for r in rows.values()), 2),
         "total_est_cpu_hours": round(sum(r["est_cpu_hours"] for r in rows.values()), 2),
         "loadavg_start": load0, "loadavg_end": os.getloadavg(), "cpu_count": os.cpu_count(),
         "wall_s": round(time.time() - t0, 1)}
  evidence.emit(out, _OUT.value)


if __name__ == "__main__":
  app.run(main)
