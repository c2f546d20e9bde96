"""Training shared by every stage that trains a model (pretrain, fine-tuning, distillation):
the recipe config (the top-level ``train`` group), AdamW and its schedules, precision and
loss scaling, torchrun/DDP/FSDP, resumable checkpoints, windows over token files,
validation loss and bits-per-byte, and the metrics log."""
