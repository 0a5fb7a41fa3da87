"""Gradient attacks on text-to-image models. ATM (arXiv 2306.02583): `atm` (the attack step),
`gumbel` (Gumbel-softmax), `modes` (which positions change), `similarity` (BERTScore-idf stand-in),
`prompts` (prompt sets), `job` (the resumable attack job), `report` (summary and report)."""
