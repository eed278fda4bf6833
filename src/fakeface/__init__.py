"""fakeface: detect GAN-generated face images with Keras transfer learning."""

__version__ = "0.1.0"

#: Class names by label index. ``fake`` is the positive class: every probability the
#: package reports is p(fake).
CLASS_NAMES = ("real", "fake")
LABEL_INDEX = {name: index for index, name in enumerate(CLASS_NAMES)}
SPLITS = ("train", "valid", "test")


class FakefaceError(ValueError):
    """A user-facing failure (bad params, unusable data, missing input): the CLI prints the
    message and exits 2 instead of showing a traceback."""
