"""GRU4Rec (Hidasi et al., ICLR 2016; Hidasi & Karatzoglou, CIKM 2018) as the official implementation trains it:
``params`` (its hyper-parameters), ``training`` (PyTorch: the only module that imports it), ``weights`` (the trained
arrays and the numpy forward pass the API serves with), ``batching`` and ``sampling`` (session-parallel mini-batches
and the popularity^α negatives, numpy)."""
