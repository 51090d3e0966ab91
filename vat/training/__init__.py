"""Training of both stages; the scripts in train/ are thin entry points over these modules.

run.py            one training run: resume and config check, the step loop, checkpoints, logging, export
meters.py         named metric sums, all-reduced by name under torch.distributed
distributed.py    process group, device, replica digests, step seeds
options.py        the command line both trainers share; schedule.py: data order, AdamW, lr schedule, bf16
tokenizer.py      stage 1 (train/train_tokenizer.py), with tokenizer_data.py and tokenizer_eval.py
generator.py      stage 2 (train/train_generator.py), with generator_data.py and generator_eval.py
generator_prepare.py, renders.py    stage-2 data (train/prepare_generator_data.py)
arms.py           arms of one comparison: ablation.py (train/ablate_tokenizer.py), curves.py (train/learning_curves.py)
scaling.py        the data-scaling and model-size tables and plots (train/data_scaling.py)
"""
