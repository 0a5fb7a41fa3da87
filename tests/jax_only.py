"""The environment the tests add for their JAX-only subprocesses; not a test module.

Launchers and multi-device workers import transformers for the CLIP tokenizer (and the slow image
processors) only, whose Python classes never touch PyTorch; with PyTorch installed, transformers
imports it anyway (about 5 s of CPU per process start, more than half of a launcher's start-up).
`USE_TORCH=0` tells transformers not to: the same tokenizer and processor classes, the same
outputs. Subprocesses that use PyTorch (the GPU suite's rehearsal, the diffusers references) do
not get it.
"""

JAX_ONLY = {"USE_TORCH": "0"}
