"""Raw data to a training set: reading raw files, row formats, the cleaning rules, splits, check-data.

raw_files.py reads JSONL/CSV/Parquet row by row (a bad row is kept with its
rule, only an unreadable file stops the run), formats/ maps a row to chat
messages, chat_format.py is the one chat-format validator, cleaning.py
validates, deduplicates and splits (every raw row kept or quarantined),
splits.py holds the split policies, check_data.py runs all of it on any files.
"""
