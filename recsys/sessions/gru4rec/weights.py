"""A trained GRU4Rec as plain arrays, and its forward pass in numpy: what the API and the batch lists score with.

No PyTorch here (the API must not import it). The GRU cell is ``torch.nn.GRUCell``'s, gates in its order (reset r,
update z, new n) and with its two biases:

    r = σ(W_ir x + b_ir + W_hr h + b_hr)        z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))      h' = (1 − z) ⊙ n + z ⊙ h

The score of item i after a session is ``item_embeddings[i] · h + item_bias[i]``, h the last layer's state after
the session's last item (dropout is off at inference and inverted in training, so nothing is rescaled).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.sessions.arrays import Sequences

MANIFEST = "gru4rec.json"
FORMAT = 1
STEPS_PER_CHUNK = 64                # of the padded sequences run at once (memory: rows × 64 × 3·hidden floats)


@dataclass(frozen=True)
class GruLayer:
    """One GRU layer, laid out as ``torch.nn.GRUCell`` (rows: the r, z, n gates of ``hidden`` units each)."""

    weight_ih: np.ndarray        # float32[3·hidden, inputs]
    weight_hh: np.ndarray        # float32[3·hidden, hidden]
    bias_ih: np.ndarray          # float32[3·hidden]
    bias_hh: np.ndarray          # float32[3·hidden]

    @property
    def hidden(self) -> int:
        return self.weight_hh.shape[1]

    def run(self, inputs: np.ndarray, mask: np.ndarray, state: np.ndarray) -> np.ndarray:
        """The states after each step of ``inputs`` (float32[batch, steps, inputs]) from ``state`` (float32[batch,
        hidden]); where ``mask`` (bool[batch, steps]) is False the step is padding and the state is carried on."""
        batch, steps, _ = inputs.shape
        size = self.hidden
        projected = inputs @ self.weight_ih.T + self.bias_ih            # every step's input part at once
        projected[..., :2 * size] += self.bias_hh[:2 * size]            # r and z add both biases outside the gate
        bias_n = self.bias_hh[2 * size:]
        states = np.empty((batch, steps, size), np.float32)
        for t in range(steps):                          # in place: the loop runs per request, its calls dominate
            hidden = state @ self.weight_hh.T
            gates = hidden[:, :2 * size]
            gates += projected[:, t, :2 * size]
            _sigmoid_inplace(gates)
            new = hidden[:, 2 * size:]
            new += bias_n
            new *= gates[:, :size]
            new += projected[:, t, 2 * size:]
            np.tanh(new, out=new)
            stepped = state - new
            stepped *= gates[:, size:]
            stepped += new                              # (1 − z) ⊙ n + z ⊙ h = n + z ⊙ (h − n)
            state = stepped if mask[:, t].all() else np.where(mask[:, t, None], stepped, state)
            states[:, t] = state
        return states


@dataclass(frozen=True)
class Gru4RecWeights:
    """Every array the forward pass needs. Item indices are the dense ones of the sequences it was trained on."""

    item_embeddings: np.ndarray              # float32[n_items, layers[-1]]: output (and, shared, input) embeddings
    item_bias: np.ndarray                    # float32[n_items]
    layers: tuple[GruLayer, ...]
    input_embeddings: np.ndarray | None = None   # float32[n_items, embedding] when not shared with the output

    @property
    def n_items(self) -> int:
        return self.item_embeddings.shape[0]

    def next_scores(self, items: np.ndarray) -> np.ndarray:
        """float32[n_items]: the score of every item as the next one after the session ``items`` (oldest first;
        empty: the item biases alone)."""
        items = np.asarray(items, dtype=np.int64)
        state = self._final_states(items[None, :], np.ones((1, len(items)), bool))[0]
        scores = self.item_embeddings @ state       # the API calls this per request: one n_items vector, no other
        scores += self.item_bias
        return scores

    def next_scores_batch(self, sequences: Sequences, rows_per_block: int = 256) -> Iterator[tuple[np.ndarray,
                                                                                                   np.ndarray]]:
        """``(rows, scores)`` blocks covering every sequence once: ``scores[j]`` (float32[n_items]) follows sequence
        ``rows[j]``. Rows come shortest first, so a block pads its sequences to a similar length (left-padded and
        masked, so every sequence ends on the block's last step); ``rows_per_block`` bounds the block's memory
        (rows × n_items × 4 bytes)."""
        lengths = sequences.lengths
        order = np.argsort(lengths, kind="stable")
        for block in np.array_split(order, max(1, -(-len(order) // rows_per_block))):
            if not len(block):
                continue
            steps = int(lengths[block].max())
            padded = np.zeros((len(block), steps), np.int64)
            mask = np.arange(steps)[None, :] >= steps - lengths[block][:, None]
            padded[mask] = np.concatenate([sequences[int(row)] for row in block])
            states = self._final_states(padded, mask)
            yield block, states @ self.item_embeddings.T + self.item_bias

    def _final_states(self, items: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """float32[batch, layers[-1]]: the last layer's state after each row of ``items`` (int64[batch, steps]).
        Time runs in chunks of ``STEPS_PER_CHUNK`` through every layer, so memory stays bounded however long the
        sequences are (a chunk's input projections are one matrix product per layer)."""
        table = self.item_embeddings if self.input_embeddings is None else self.input_embeddings
        states = [np.zeros((len(items), layer.hidden), np.float32) for layer in self.layers]
        for start in range(0, items.shape[1], STEPS_PER_CHUNK):
            chunk = slice(start, start + STEPS_PER_CHUNK)
            outputs = table[items[:, chunk]]
            for i, layer in enumerate(self.layers):
                outputs = layer.run(outputs, mask[:, chunk], states[i])
                states[i] = outputs[:, -1]
        return states[-1]

    def save(self, folder: Path) -> None:
        """One ``.npy`` per array and a small JSON manifest in ``folder`` (created)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in self._arrays().items():
            np.save(folder / f"{name}.npy", np.ascontiguousarray(array, dtype=np.float32))
        manifest = {"format": FORMAT, "n_items": self.n_items, "layers": [layer.hidden for layer in self.layers],
                    "shared_embeddings": self.input_embeddings is None}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path, mmap: bool = True) -> Gru4RecWeights:
        """The weights ``save`` wrote; memory-mapped read-only by default (the pages load when first scored)."""
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{folder / MANIFEST}: unknown GRU4Rec weights format {manifest.get('format')!r}")

        def array(name: str) -> np.ndarray:
            return np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None)

        layers = tuple(GruLayer(*(array(f"layer{i}_{part}") for part in _LAYER_PARTS))
                       for i in range(len(manifest["layers"])))
        return cls(array("item_embeddings"), array("item_bias"), layers,
                   None if manifest["shared_embeddings"] else array("input_embeddings"))

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"item_embeddings": self.item_embeddings, "item_bias": self.item_bias}
        if self.input_embeddings is not None:
            arrays["input_embeddings"] = self.input_embeddings
        for i, layer in enumerate(self.layers):
            arrays |= {f"layer{i}_{part}": getattr(layer, part) for part in _LAYER_PARTS}
        return arrays


_LAYER_PARTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _sigmoid_inplace(x: np.ndarray) -> None:
    """σ(x) = (tanh(x/2) + 1)/2, in place: no overflow for large |x| (1/(1+e^-x) overflows e^-x in float32)."""
    x *= 0.5
    np.tanh(x, out=x)
    x *= 0.5
    x += 0.5
