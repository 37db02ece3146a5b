"""Session-based recommendation: sequences of items in time order (built from the warehouse), the next-item models
trained on them (``cooccurrence``, ``gru4rec``) and their next-item evaluation. The serving side needs only numpy:
nothing here imports PyTorch at module level."""
