"""Gradient attacks on text-to-image models. ATM (arXiv 2306.02583): `atm` (the attack step),
`gumbel` (Gumbel-softmax), `modes` (which positions change), `similarity` (BERTScore-idf stand-in),
`prompts` (prompt sets), `random_substitution` (the baseline, also an attack of its own),
`registry` (ATTACKS by name). The resumable attack job, split like the search: `config`
(validation, judges by name), `experiment` (models, prompts, clean check, evaluation: every
judge's `judges.Verdict` and the attack's success rule on top), `step` (the attack loop),
`checkpoint` (msgpack + orbax-sharded), `rows`, `report`, `job` (orchestration: `run`)."""
