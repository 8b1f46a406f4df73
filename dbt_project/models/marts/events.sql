{#- The event feature table for researchers in DuckDB: every feature column plus the market's split
    and volatility class. A view: the data stays in the parquet partitions. -#}
select e.*, m.split, m.volatility_class
from {{ ref('stg_features__events') }} e
left join {{ ref('markets') }} m using (market_ticker)
