"""Training of both stages, shared by the scripts in train/ (thin entry points over these modules).

run.py       one training run: resume and config check, checkpoints, logging, the loop, the export
meters.py    named metric sums, all-reduced by name under torch.distributed
distributed.py, options.py, schedule.py    process group and device, the command line, data order and optimiser
tokenizer*.py    stage 1 (train/train_tokenizer.py); generator*.py stage 2 (train/train_generator.py)
renders.py   stage-2 data: a prepared shape's mesh and its framed renders (train/prepare_generator_data.py)
arms.py      arms of one comparison (train/ablate_tokenizer.py, train/learning_curves.py)
"""
