"""A bounded, seeded reservoir of receptive-field instances, updated inside compiled TF code.

Classic reservoir sampling (Vitter's algorithm R) done for a whole batch of m candidates at once
with static shapes, so it can live in the recorder's compiled (even XLA) measurement
(``deepeyes_keras/record/recorder.py``): candidate number t (over the whole run) takes slot t
while the reservoir is filling, afterwards slot j ~ U{0..t} when j < capacity. Rejected candidates,
and candidates that lose a slot to a later candidate of the same batch, are written to a spare row
at index ``capacity`` that is never read.

Every accepted instance gets a unique, increasing id (``uid`` = t), so the snapshot writer can
store each instance once and later snapshots only list which ids the reservoir holds.
"""

from __future__ import annotations

import tensorflow as tf

# Columns of the reservoir besides the arrays given at construction.
INDEX_FIELDS = ("uid", "step", "image", "position", "label")


class Reservoir:
    """Reservoir of one layer's instances.

    Args:
        capacity: number of instances kept.
        shapes: per-instance shape of each array column, e.g.
            ``{"descriptor": (D,), "activation": (F,), "patch": (5, 5, 1)}``.
        make_variable: factory ``(name, initial_value) -> tf.Variable``.
        scatter: ``(variable, indices, updates) -> None`` writing rows (differs for replicated
            variables, see ``deepeyes_keras/record/recorder.py``).
        seed: integer seed; candidates' random draws derive from (seed, step).
        dtypes: optional dtype per array column (default float32); bulk columns the snapshot
            stores as float16 anyway can be kept as float16 here, halving their memory.
    """

    def __init__(
        self,
        capacity: int,
        shapes: dict[str, tuple[int, ...]],
        make_variable,
        scatter,
        seed: int,
        dtypes: dict[str, tf.DType] | None = None,
    ):
        self.capacity = int(capacity)
        self.shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
        self.dtypes = {k: (dtypes or {}).get(k, tf.float32) for k in self.shapes}
        self._scatter = scatter
        self._seed = int(seed)
        rows = self.capacity + 1  # + the spare row
        self.seen = make_variable("seen", tf.zeros([], tf.int64))
        self.columns: dict[str, tf.Variable] = {
            "uid": make_variable("uid", tf.fill([rows], tf.constant(-1, tf.int64))),
            "step": make_variable("step", tf.fill([rows], tf.constant(-1, tf.int64))),
            "image": make_variable("image", tf.fill([rows], tf.constant(-1, tf.int64))),
            "position": make_variable("position", tf.fill([rows], -1)),
            "label": make_variable("label", tf.fill([rows], -1)),
        }
        for name, shape in self.shapes.items():
            self.columns[name] = make_variable(name, tf.zeros((rows,) + shape, self.dtypes[name]))

    def update(self, step: tf.Tensor, values: dict[str, tf.Tensor]) -> None:
        """Offers m candidates sampled at ``step``.

        Args:
            step: scalar int64 training step.
            values: one (m, ...) tensor for every column (index fields except uid/step included:
                image, position, label; plus every array column). m must be static.
        """
        m = int(values["label"].shape[0])
        seen = self.seen.read_value()
        t = seen + tf.range(m, dtype=tf.int64)  # global candidate numbers
        u = tf.random.stateless_uniform(
            [m], seed=tf.stack([tf.constant(self._seed, tf.int64), step]), dtype=tf.float64
        )
        j = tf.cast(tf.floor(u * tf.cast(t + 1, tf.float64)), tf.int64)
        slot = tf.where(t < self.capacity, t, j)
        spare = tf.constant(self.capacity, tf.int64)
        slot = tf.where(slot < self.capacity, slot, spare)
        # Several candidates may draw the same slot: the last one wins, as if offered in turn.
        order = tf.range(m, dtype=tf.int64)
        winner = tf.math.unsorted_segment_max(order, slot, num_segments=self.capacity + 1)
        wins = tf.gather(winner, slot) == order
        slot = tf.where(wins & (slot < spare), slot, spare)[:, None]

        updates = {
            "uid": t,
            "step": tf.fill([m], step),
            "image": tf.cast(values["image"], tf.int64),
            "position": tf.cast(values["position"], tf.int32),
            "label": tf.cast(values["label"], tf.int32),
        }
        for name in self.shapes:
            updates[name] = tf.cast(values[name], self.dtypes[name])
        for name, update in updates.items():
            self._scatter(self.columns[name], slot, update)
        self.seen.assign_add(m)

    def variables(self) -> dict[str, tf.Variable]:
        return dict(self.columns, seen=self.seen)
