"""Evaluation on Ray workers (``lf.Game(..., workers=K)``, ``--workers K``): the same executor in
K actors, each holding one model replica; only the driver writes the cache.

``cluster`` (start or join a Ray cluster) -> ``pool`` (the actors: start-up, sizes, setup) with
``schedule`` (the driver's loop over any backend of workers, testable without Ray) -> ``worker``
(the actor's body) ; ``partition`` cuts the needed (coalition, batch) pairs into units that keep
prefix sharing; ``runner`` is the Game's runner over all of it. Ray is imported only when a pool
starts (``pip install 'layerfast[ray]'``).
"""
