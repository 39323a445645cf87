"""Model cards written from a checkpoint's saved recipe and the evaluator's results (`gmaivl card`)."""
