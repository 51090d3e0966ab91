"""Stage 2: train the next-scale generator on data written by train/prepare_generator_data.py (see
vat/training/generator.py and `python train/train_generator.py --help`)."""

from vat.training.generator import main

if __name__ == "__main__":
    main()
