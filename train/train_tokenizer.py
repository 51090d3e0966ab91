"""Stage 1: train the VAT tokenizer on shards written by train/prepare_data.py (see vat/training/tokenizer.py
and `python train/train_tokenizer.py --help`)."""

from vat.training.tokenizer import main

if __name__ == "__main__":
    main()
