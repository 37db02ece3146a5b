"""Post-deployment monitoring: API events → ``ops/events`` → daily indicators, the A/B readout, a traffic
simulator over the planted clusters, and the promotion gate's online counterpart. (The API itself assigns users
to variants and serves each its snapshot: :mod:`recsys.serve.experiment`, :mod:`recsys.serve.variants`.)

Modules (one idea each): ``settings`` (the ``monitor`` config section), ``events_compaction`` (log files →
``ops/events``), ``indicators`` (``ops/events`` → ``ops/indicators``), ``ab`` (readout statistics),
``random_version`` (a random-lists published version: the null model), ``simulate`` (synthetic users driving the
API), ``report`` (the A/B readout).
"""
