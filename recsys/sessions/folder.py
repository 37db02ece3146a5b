"""The names inside a saved session model's folder (:mod:`recsys.session_model` writes it, its docstring says what
each holds), here so that the serving snapshot, which copies the scorer out of it, reads the same names without
importing the model (Spark) or its trainer (PyTorch)."""

from __future__ import annotations

META = "model.json"                 # name, params, info, n_items
HISTORY = "user_history"            # id (user index), items (latest session), seen (fitted items)
NEIGHBOURS = "item_neighbours"      # co-occurrence: id, parent_asin, popularity, neighbours, scores
EMBEDDINGS = "item_embeddings"      # GRU4Rec: id, parent_asin, features (output embedding), bias[, input]
LAYERS = "gru4rec_layers"           # GRU4Rec's layers (Gru4RecWeights.save without item rows)
