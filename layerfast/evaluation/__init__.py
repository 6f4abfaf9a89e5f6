"""Stage 3 of models -> tasks -> evaluation -> estimators -> report: evaluation, a coalition
(bool keep-mask over players) -> a utility.

``batching`` (requests -> rows and padded batches, trie packing) -> ``naive_executor`` /
``prefix_executor`` (the model run with players skipped; ``executors`` is the registry) ->
``logprobs`` (continuation log-likelihoods, the LM head in vocabulary chunks) -> the task's scorer
(:mod:`layerfast.tasks.contract`) ; ``sizing`` (batch size and memory budget); ``runner`` (who
computes what a game needs: in this process, or on Ray workers, :mod:`.ray`); ``cache`` (the
on-disk store and its key); ``players`` (who a game's players are); ``game`` (``lf.Game``: memo
+ cache + runner); ``perplexity`` (``lf.perplexity``, a wrapper over a ``text:`` game).
"""
