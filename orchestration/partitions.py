import dagster as dg

from kfs.config import partitions_start

daily_partitions = dg.DailyPartitionsDefinition(start_date=partitions_start(), timezone="UTC")
