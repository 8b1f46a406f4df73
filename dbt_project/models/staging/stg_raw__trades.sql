select
    id as trade_row_id,
    market_ticker,
    cast(yes_price as integer) as yes_price_cents,
    cast(count as bigint) as contracts,
    taker_side,
    ts as trade_ts_ms,
    received_at as received_ts_ms,
    cast(date as date) as trade_date
from {{ source('raw', 'trades') }}
