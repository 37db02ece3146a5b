"""Post-deployment monitoring: API events → ``ops/events`` → daily indicators, A/B assignment and readout,
a traffic simulator over the planted clusters, and the promotion gate's online counterpart.

Modules (one idea each): ``settings`` (the ``monitor`` config section), ``events_compaction`` (log files →
``ops/events``), ``indicators`` (``ops/events`` → ``ops/indicators``), ``ab`` (assignment and statistics),
``variants`` (which snapshot serves which variant in the API), ``random_version`` (a random-lists published
version: the null model), ``simulate`` (synthetic users driving the API), ``report`` (the A/B readout).
"""
