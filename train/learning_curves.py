"""Learning curves of tokenizer designs ("arms") on one budget, and the ladder's first rung (see
vat/training/curves.py and `python train/learning_curves.py --help`)."""

from vat.training.curves import main

if __name__ == "__main__":
    main()
