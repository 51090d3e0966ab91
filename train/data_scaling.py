"""The data-scaling table and plot of generator or tokenizer runs on different training data (see
vat/training/scaling.py and `python train/data_scaling.py --help`)."""

from vat.training.scaling import main

if __name__ == "__main__":
    main()
