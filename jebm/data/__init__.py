"""Data: TFDS ArrayRecord readers, jebm's own TFDS builders, batching and dequantisation.

    data = jebm.data.arrays("mnist", "train")  # {"image": [N,28,28,1] uint8, "label": [N] int32}
    for batch in jebm.data.batches(data, 128, seed=0):  # endless, deterministic, per process
      x = jebm.data.dequantize(key, batch["image"])     # float32 in [0, 1]

    source = jebm.data.load("mnist", "train")           # random access, nothing in memory
    for batch in jebm.data.stream(source, 128, seed=0): # the same batches, read by grain

    data.load("imagenet2012@128", "train")               # short side resized to 128, centre crop

No TensorFlow is needed and nothing is downloaded; see `jebm.data.loading` for names and data dirs.
"""

from jebm.data import toy2d
from jebm.data.builders import JebmDigits, JebmMnist, JebmToy2d
from jebm.data.builders import MNIST_ENV_VAR, find_mnist_files
from jebm.data.checks import DataError, check_arrays, check_dataset_name
from jebm.data.idx import read_idx, write_idx
from jebm.data.loading import JEBM_DATASETS, arrays, builder, default_data_dir, load
from jebm.data.loading import source_to_arrays, split_image_size, stack_records
from jebm.data.resize import resize_and_center_crop
from jebm.data.pipeline import batch_indices, batches, crop_flip, dequantize, epoch_permutation
from jebm.data.pipeline import random_crop
from jebm.data.pipeline import steps_per_epoch, to_float
from jebm.data.streaming import read_batch, stream
