"""Language-model distillation: recipe sections, model and tokenizer resolution, the
vocabulary check, and the LM run (the same Trainer as every other run)."""
