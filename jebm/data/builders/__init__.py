"""The project's own TFDS builders (registered in the TFDS registry on import).

TFDS names: ``jebm_digits``, ``jebm_mnist``, ``jebm_toy2d/{8gaussians,rings,checkerboard,
two_moons}``, ``jebm_dsprites/{procedural,deepmind}``, ``jebm_trajectories/{reacher,pusher}`` (needs the ``mujoco`` extra). They write ArrayRecord files by default, so
``tfds.data_source("jebm_digits", data_dir=DIR)`` prepares and reads them without TensorFlow;
`jebm.data.load` calls them by their short names (``digits``, ``mnist``, ``toy2d/...``).
"""

from jebm.data.builders.digits import JebmDigits, digits_split
from jebm.data.builders.dsprites import JebmDsprites
from jebm.data.builders.mnist import JebmMnist, find_mnist_files, MNIST_ENV_VAR, MNIST_FILES
from jebm.data.builders.toy2d import JebmToy2d
from jebm.data.builders.trajectories import JebmTrajectories
