"""Model versions: the registry of everything that can be evaluated, their kinds (kinds/: base,
lora_merged, full, openai), lineage walks, training and inference cost by device, the leaderboard,
champion/challenger promotion, serving commands and the retraining check. Reads artifacts through
storage; trains nothing."""
