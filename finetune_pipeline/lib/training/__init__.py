"""Training: the engine (HF Trainer + PEFT: LoRA, QLoRA, full), padding-free batches, collators,
checkpoints and resume, the child's spec and how it is launched (subprocess, torchrun, a k8s pod, a pod
that shares no folder with the run), and OpenAI fine-tuning jobs (openai/)."""
