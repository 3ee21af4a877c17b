"""What a job writes under OUTPUT: the schema, the Parquet writer and compaction, readers, the record."""
