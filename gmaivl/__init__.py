"""GMAI-VL: a medical vision-language model, Hugging Face native."""
