"""Neural networks: shared layers (layers.py), the VAT tokenizer (tokenizer.py, its config tokenizer_config.py,
the locality prior grid.py) and its quantiser (quantizer.py), the next-scale generator (gpt.py), the condition
encoders (conditioning.py, image_encoders.py, text_encoder.py, hub.py) and checkpoint folders (checkpoint.py)."""
