"""Stage-2 data: the frozen tokenizer's tokens, framed renders with their masks, captions and cached
condition features of every prepared shape (see vat/training/generator_prepare.py and
`python train/prepare_generator_data.py --help`)."""

from vat.training.generator_prepare import main
from vat.training.renders import oriented_mesh  # noqa: F401 (tests/test_prepare_data.py reads it from here)

if __name__ == "__main__":
    main()
