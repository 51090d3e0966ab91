"""The paper's tokenizer ablations at one budget, trained and scored alike (see vat/training/ablation.py
and `python train/ablate_tokenizer.py --help`)."""

from vat.training.ablation import main

if __name__ == "__main__":
    main()
