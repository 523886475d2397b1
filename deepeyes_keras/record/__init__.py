"""Recording in the training process: the only stage that imports TensorFlow.

`callback.py` holds `DeepEyesCallback` (the Keras hooks; `arguments.py` checks its arguments);
`schedule.py` picks the measured and snapshot steps, `selection.py` the analysed layers (also
inside nested models) and `budget.py` bounds their memory on big networks. `taps.py` says what an
instance and its descriptor are per layer kind and builds the tap model; `recorder.py` captures
and measures them, with `statistics.py` (the running statistics as TF ops), `reservoir.py` (the
instances kept for the input map), `geometry.py` and `geometry_layers.py` (receptive-field
geometry read from the graph: the walk, and each layer's rule) and `patches.py` (the TF ops that
cut receptive fields out of tensors).
`snapshot.py` turns the recorder's state into a snapshot and `describe.py` the run and model into
the manifest; the run directory's writer is `deepeyes_keras/run/writer.py`.

Example:
    >>> from deepeyes_keras.record.callback import DeepEyesCallback   # doctest: +SKIP
    >>> model.fit(x, y, callbacks=[DeepEyesCallback(log_dir="runs")])  # doctest: +SKIP
"""
