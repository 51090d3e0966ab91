"""Neural networks: point embedding, attention blocks, the VAT tokenizer and its quantiser."""
