"""Shared helpers of the benchmark scripts: the machine, Markdown tables, benchmark models and data.

Nothing here downloads: MNIST comes from a local ``.npz`` (``--mnist`` or ``DEEPEYES_MNIST``), the
other data sets are generated (seeded) from NumPy and scikit-learn.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# ../shared/data/mnist.npz beside the checkout (as in CI), whatever the working directory.
DEFAULT_MNIST = os.environ.get("DEEPEYES_MNIST") or os.path.normpath(
    REPO / ".." / "shared" / "data" / "mnist.npz")
MODELS = ("lenet", "vgg", "dense", "resnet", "mobilenet")


def quiet_tensorflow() -> None:
    """Silences TensorFlow's C++ start-up chatter (call before importing TensorFlow or Keras)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine_line(*, tensorflow: bool = True) -> str:
    """One line describing the machine and the versions that matter."""
    parts = [f"{os.cpu_count()} CPU cores ({cpu_model()})"]
    mem = memory_gib()
    if mem:
        parts.append(f"{mem:.0f} GiB RAM")
    parts.append(f"Python {platform.python_version()}")
    if tensorflow:
        import keras
        import tensorflow as tf

        parts.append(f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
        gpus = tf.config.list_physical_devices("GPU")
        parts.append(f"{len(gpus)} GPU(s)" if gpus else "no GPU")
    try:
        load = os.getloadavg()[0]
        parts.append(f"load average at start {load:.1f}")
    except OSError:
        pass
    return "Machine: " + "; ".join(parts) + "."


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table (cells already formatted as strings)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """'median (min-max)' of a list of numbers."""
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process in MB (10^6 bytes)."""
    import psutil

    return psutil.Process(pid).memory_info().rss / 1e6


def add_fit_arguments(parser, *, repeats: int) -> None:
    """The options shared by the scripts that time whole fits of the benchmark models."""
    parser.add_argument("--model", choices=[*MODELS, "all"], default="lenet")
    parser.add_argument("--mnist", default=DEFAULT_MNIST)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--steps", type=int, default=None, help="limit steps per epoch")


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads (not its child processes)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- benchmark models and data ------------------------------------------------------------------


def load_data(model: str, *, mnist: str = DEFAULT_MNIST, n: int | None = None, seed: int = 0):
    """(x, y, description) for one of the benchmark models, float32 inputs, int labels."""

    if model == "lenet":
        from deepeyes_keras.data import load_mnist

        (x, y), _ = load_mnist(mnist)
        desc = f"MNIST ({len(x):,} training images, 28x28x1)"
        if n is not None:
            x, y = x[:n], y[:n]
            desc = f"MNIST (first {len(x):,} training images, 28x28x1)"
        x = x[..., None].astype("float32") / 256.0
        return x, y.astype("int64"), desc
    if model == "vgg":
        n = n or 10_000
        x, y = synthetic_images(n, seed=seed)
        return x, y, (f"synthetic CIFAR-like images ({n:,}, 32x32x3, 10 classes: a smooth random "
                      "template per class, shifted, plus noise)")
    if model in ("resnet", "mobilenet"):
        n = n or 10_000
        x, y = synthetic_images(n, seed=seed)
        return x, y, (f"synthetic CIFAR-like images ({n:,}, 32x32x3, 10 classes, as for vgg)")
    if model == "dense":
        n = n or 50_000
        x, y = tabular(n, seed=seed)
        return x, y, (f"tabular data from sklearn make_classification ({n:,} rows, 54 features, "
                      "7 classes)")
    raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")


def synthetic_images(n: int, *, seed: int = 0, classes: int = 10):
    """CIFAR-like 32x32x3 images: a smooth random template per class, shifted, plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(classes, 4, 4, 3)).astype("float32")
    templates = coarse.repeat(10, axis=1).repeat(10, axis=2)  # 40x40: room to shift by 0..8 px
    kernel = np.ones(5, "float32") / 5  # blur the blocks into smooth blobs
    for axis in (1, 2):
        templates = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), axis, templates)
    y = rng.integers(0, classes, n)
    dx, dy = rng.integers(0, 9, n), rng.integers(0, 9, n)
    x = np.empty((n, 32, 32, 3), "float32")
    for i in range(n):
        x[i] = templates[y[i], dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
    x += rng.normal(scale=0.8, size=x.shape).astype("float32")
    x = (x - x.mean()) / x.std()
    return x.astype("float32"), y.astype("int64")


def tabular(n: int, *, seed: int = 0):
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=54, n_informative=24, n_redundant=12,
                               n_classes=7, n_clusters_per_class=2, class_sep=1.0,
                               random_state=seed)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    return x.astype("float32"), y.astype("int64")


def build_model(model: str, *, seed: int = 0):
    """A compiled benchmark model: the paper's LeNet, a VGG-style CNN, a dense MLP, a small
    ResNet (BatchNorm, residual adds) or keras.applications' MobileNetV2."""
    import keras

    if model == "lenet":
        from deepeyes_keras.models import compile_lenet, lenet

        return compile_lenet(lenet(seed=seed))

    def init(offset):
        return keras.initializers.GlorotUniform(seed=seed * 100 + offset)

    if model == "vgg":
        layers = [keras.Input((32, 32, 3))]
        i = 0
        for block, (filters, convs) in enumerate(((16, 2), (32, 2), (64, 2)), start=1):
            for c in range(1, convs + 1):
                layers.append(keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                                  kernel_initializer=init(i),
                                                  name=f"conv{block}_{c}"))
                i += 1
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{block}"))
        layers += [
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, activation="relu", kernel_initializer=init(i), name="fc1"),
            keras.layers.Dense(10, kernel_initializer=init(i + 1), name="logits"),
        ]
        net = keras.Sequential(layers, name="vgg_small")
    elif model == "resnet":
        net = small_resnet(init)
    elif model == "mobilenet":
        net = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35,
                                             classes=10, classifier_activation=None)
    elif model == "dense":
        net = keras.Sequential([
            keras.Input((54,)),
            keras.layers.Dense(512, activation="relu", kernel_initializer=init(0), name="fc1"),
            keras.layers.Dense(256, activation="relu", kernel_initializer=init(1), name="fc2"),
            keras.layers.Dense(128, activation="relu", kernel_initializer=init(2), name="fc3"),
            keras.layers.Dense(7, kernel_initializer=init(3), name="logits"),
        ], name="dense_mlp")
    else:
        raise ValueError(f"unknown model {model!r}; expected one of {MODELS}")
    net.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    return net


def small_resnet(init):
    """A small ResNet: a 3x3 stem, three residual stages (16, 32, 64) of one basic block each
    (conv-BN-ReLU-conv-BN, added to the identity or a strided 1x1 projection), global pooling."""
    import keras
    from keras import layers as L

    x = inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(16, 3, padding="same", use_bias=False, kernel_initializer=init(0), name="stem")(x)
    x = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(x))
    for i, filters in enumerate((16, 32, 64), start=1):
        stride = 1 if i == 1 else 2
        y = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                     kernel_initializer=init(10 * i), name=f"block{i}_conv1")(x)
        y = L.ReLU(name=f"block{i}_relu1")(L.BatchNormalization(name=f"block{i}_bn1")(y))
        y = L.Conv2D(filters, 3, padding="same", use_bias=False,
                     kernel_initializer=init(10 * i + 1), name=f"block{i}_conv2")(y)
        y = L.BatchNormalization(name=f"block{i}_bn2")(y)
        if stride != 1 or x.shape[-1] != filters:
            x = L.Conv2D(filters, 1, strides=stride, use_bias=False,
                         kernel_initializer=init(10 * i + 2), name=f"block{i}_proj")(x)
        x = L.ReLU(name=f"block{i}_out")(L.Add(name=f"block{i}_add")([x, y]))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(10, kernel_initializer=init(99), name="logits")(x)
    return keras.Model(inputs, outputs, name="resnet_small")


def describe_model(model: str, net) -> str:
    names = {"lenet": "Caffe LeNet (the case study's recipe)",
             "vgg": "VGG-style CNN (3x3 convs 16-16, 32-32, 64-64 with ReLU, max-pool after each "
                    "pair; dense 128, 10)",
             "dense": "dense MLP (512-256-128-7, ReLU)",
             "resnet": "small ResNet (3x3 stem 16; basic blocks 16, 32, 64 with BatchNorm and "
                       "residual adds; global pooling; dense 10)",
             "mobilenet": "keras.applications.MobileNetV2 (alpha 0.35, 32x32, weights=None, "
                          "10 classes)"}
    return f"{names[model]}, {net.count_params():,} parameters"


def wait_for_maps(callback, timeout: float) -> tuple[float, bool]:
    """Waits for a DeepEyesCallback's background maps, at most ``timeout`` seconds.

    Returns (seconds waited, finished). When the cap is reached the maps process is stopped (by
    its pid, found among this process's children), so the next measurement starts on idle cores.
    """
    import threading
    import time

    import psutil

    began = time.perf_counter()
    waiter = threading.Thread(target=callback.wait_for_maps, kwargs={"verbose": False},
                              daemon=True)
    waiter.start()
    waiter.join(timeout)
    finished = not waiter.is_alive()
    if not finished:
        for child in psutil.Process().children(recursive=True):
            # The worker runs `python -c <launcher>`; the launcher names the worker's module.
            if "deepeyes_keras.derive.worker" in " ".join(child.cmdline()):
                child.terminate()
        waiter.join(60)
    return time.perf_counter() - began, finished


def tf_dataset(x, y, batch: int, *, seed: int = 0, autotune: bool = False):
    """The arrays as a shuffled, batched, prefetched tf.data pipeline, autotuning off by default.

    tf.data's autotuning thread makes the destruction of an iterator wait, at random, for the rest
    of its optimisation period (seconds; up to a minute in long epochs): that wait lands at every
    epoch's end and at the end of ``fit``, in plain fits as much as in watched ones (see
    :class:`TeardownProbe` and the benchmarks page). Without autotuning it never happens, so
    the ratio measures what watching costs.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = bool(autotune)
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed)
    return data.batch(batch).prefetch(2).with_options(options)


def teardown_probe():
    """A Keras callback timing what ``fit`` spends outside the steps and the other callbacks.

    ``seconds`` sums, over one fit, the time from each later epoch's ``on_epoch_begin`` to its
    first step (Keras destroys the previous epoch's data iterator there) and from the last
    callback's ``on_train_end`` to ``fit`` returning (call :meth:`returned` then): the times when
    tf.data's iterator teardown can wait. Put it last in the callback list.
    """
    import time

    import keras

    class TeardownProbe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds, self._mark = 0.0, None

        def on_epoch_begin(self, epoch, logs=None):
            self._mark = time.perf_counter() if epoch > 0 else None

        def on_train_batch_begin(self, batch, logs=None):
            if self._mark is not None:
                self.seconds += time.perf_counter() - self._mark
                self._mark = None

        def on_train_end(self, logs=None):
            self._mark = time.perf_counter()

        def returned(self) -> float:
            if self._mark is not None:
                self.seconds += time.perf_counter() - self._mark
                self._mark = None
            return self.seconds

    return TeardownProbe()
