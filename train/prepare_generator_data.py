"""Stage-2 data: the frozen tokenizer's tokens, framed renders with their masks, captions and cached
condition features of every prepared shape (see vat/training/generator_prepare.py and
`python train/prepare_generator_data.py --help`)."""

from vat.training.generator_prepare import main

if __name__ == "__main__":
    main()
