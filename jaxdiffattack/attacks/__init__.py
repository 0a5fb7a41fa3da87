"""Gradient attacks on text-to-image models. ATM (arXiv 2306.02583): `atm` (the attack step),
`gumbel` (Gumbel-softmax), `modes` (which positions change), `similarity` (BERTScore-idf stand-in),
`prompts` (prompt sets), `random_substitution` (the baseline, also an attack of its own),
`registry` (ATTACKS by name). The resumable attack job, split like the search: `config`
(validation), `experiment` (models, prompts, clean check, evaluation), `readings` (judges'
verdicts), `step` (the attack loop), `checkpoint` (msgpack + orbax-sharded), `rows`, `report`,
`job` (orchestration: `run`)."""
