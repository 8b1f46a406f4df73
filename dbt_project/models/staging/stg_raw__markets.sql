select
    ticker as market_ticker,
    series_ticker,
    event_ticker,
    case when lower(category) in ('sports', 'politics', 'economics', 'climate', 'crypto', 'other')
         then lower(category) else 'other' end as category,
    open_ts,
    close_ts,
    status,
    result,
    settled_ts
from {{ source('raw', 'markets') }}
