select
    market_ticker,
    event_time_ms,
    cast(date as date) as event_date,
    ob_yes_mid_prob,
    ob_yes_spread_prob,
    book_valid
from {{ source('features', 'events') }}
