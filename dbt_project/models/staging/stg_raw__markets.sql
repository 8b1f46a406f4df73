select
    ticker as market_ticker,
    series_ticker,
    event_ticker,
    case when lower(trim(category)) in ({{ "'" ~ kfs_vocabulary('categories') | join("', '") ~ "'" }})
         then lower(trim(category)) else 'other' end as category,
    open_ts,
    close_ts,
    status,
    result,
    settled_ts
from {{ source('raw', 'markets') }}
