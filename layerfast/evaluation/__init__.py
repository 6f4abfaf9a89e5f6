"""Stage 2, evaluation: a coalition (bool mask over players) -> a utility.

requests (task items -> token requests) -> batching (rows, packing) -> executors (naive,
prefix-cached) running the model with players skipped -> logprobs (continuation log-likelihoods)
-> utility (acc, acc_norm, ...) ; cache stores per-coalition log-likelihoods; game ties them
together as ``lf.Game``; perplexity scores plain text under a coalition.
"""
